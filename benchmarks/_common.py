"""Helpers shared by the runnable benchmarks: precision, timed calls, latency statistics, environment.

Throughput is measured here and only here (STYLE §13): warm-up calls are excluded, every call runs under
``torch.inference_mode()``, CUDA work is synchronised before and after each timed call, and every call is
timed on its own so that percentiles can be reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("fp32", "bf16", "amp_bf16")
"""``fp32``; ``bf16``: weights and inputs cast to bfloat16; ``amp_bf16``: fp32 weights under autocast."""

REPO_ROOT = Path(__file__).resolve().parents[1]


def weight_dtype(precision: str) -> torch.dtype:
    """The dtype weights and float inputs are cast to for ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``precision`` (a no-op except for ``amp_bf16``)."""
    if precision == "amp_bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA only; CPU calls are synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, with the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@dataclass
class LatencyStats:
    """Per-batch latency samples of one stage and the throughput they imply.

    Attributes:
        items_per_s: ``batch * iters / sum(latencies)``.
        mean_ms, p50_ms, p95_ms: Statistics of the per-batch latency.
        samples_ms: Every timed call, in order (warm-up excluded).
    """

    items_per_s: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    samples_ms: list[float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarise(samples_s: list[float], batch_size: int) -> LatencyStats:
    """Latency statistics of per-batch samples given in seconds."""
    ms = [s * 1000.0 for s in samples_s]
    return LatencyStats(
        items_per_s=batch_size * len(samples_s) / sum(samples_s),
        mean_ms=statistics.fmean(ms),
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        samples_ms=[round(v, 4) for v in ms],
    )


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only: the process RSS high-water mark cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> tuple[str, float]:
    """``("cuda_max_allocated", MiB)`` since the last reset, or ``("process_peak_rss", MiB)`` on CPU."""
    if device.type == "cuda":
        return "cuda_max_allocated", torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux and bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return "process_peak_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (GPU model, or the CPU model string)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_revision() -> str | None:
    """The checkout's commit hash, with ``+dirty`` when the work tree differs; ``None`` outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty else "")


def environment(device: torch.device) -> dict[str, Any]:
    """Library versions, device, threads and host facts for a benchmark record."""
    import timm
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": _cpu_count(),
        "load_average_1m": load_average(),
        "platform": platform.platform(),
        "git": git_revision(),
    }


def _cpu_count() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_average() -> float | None:
    """The host's 1-minute load average: other processes on a shared host distort CPU timings."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


@contextlib.contextmanager
def inference(precision: str, device: torch.device) -> Iterator[None]:
    """``inference_mode`` plus the precision's autocast, for every measured or compared call."""
    with torch.inference_mode(), autocast(precision, device):
        yield


def run_presets(
    args: Any,
    run_preset: Callable[[str, Any, torch.device], dict[str, Any]],
    resolve_preset: Callable[[str], str],
    table: Callable[[list[dict[str, Any]]], str],
) -> int:
    """The benchmarks' driver: run each preset of ``args.presets``, write its JSON record to
    ``args.out`` (``{preset}``/``{device}`` filled in), then print the table of all records."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    records = []
    for name in args.presets:
        preset = resolve_preset(name)
        record = run_preset(preset, args, device)
        out = Path(args.out.format(preset=preset.removeprefix("albef_"), device=device.type))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {out}", file=sys.stderr)
        records.append(record)
    print(table(records))
    return 0
