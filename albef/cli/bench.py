"""``albef bench model``: throughput, latency, FLOPs and MFU of a model preset's inference stages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from albef.reporting.schema import RunReport
    from albef.workflows.bench import ProgressFn

DEFAULT_OUT_DIR = Path("reports/bench")
TABLE_HEADERS = (
    "stage",
    "precision",
    "batch",
    "items/s",
    "p50 ms/batch",
    "p95 ms/batch",
    "p50 ms/item",
    "GFLOP/item",
    "TFLOP/s",
    "MFU",
    "peak MiB",
)


def register(subparsers: Any) -> None:
    """Add the ``bench`` command and its ``model`` subcommand."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark throughput and latency (bench model)",
        description="Benchmarks that write a run report (JSON) and print a short table.",
    )
    benches = parser.add_subparsers(title="benchmarks", dest="bench", metavar="<benchmark>", required=True)
    model = benches.add_parser(
        "model",
        help="time encode_image / encode_text / fuse+ITM / ITM re-ranking of a model preset",
        description=(
            "Build a model preset with random weights (eval mode, inference_mode) and time its inference "
            "stages on synthetic inputs at every batch size and precision: image_encode (item = image), "
            "text_encode (text), fusion_itm (image-text pair: fusion layers on given text states and image "
            "tokens + ITM head) and itm_rerank (pair: 1 image against B cached texts, as retrieval re-ranks). "
            "Warm-up calls are untimed; each timed call is measured on its own (CUDA events on GPU). Writes "
            "one run report with items/s, per-batch and per-item latency percentiles, FLOPs per item, "
            "achieved TFLOP/s, MFU (known GPUs only) and peak memory. Precisions: fp32; bf16/fp16 cast the "
            "weights; amp_bf16/amp_fp16 use autocast; fp16 variants need CUDA."
        ),
    )
    model.add_argument("--preset", required=True, help="model preset (albef ls models); 'tiny' = albef_tiny")
    model.add_argument(
        "--batch-sizes", type=_int_list, default=[1, 8, 32], help="comma list (default 1,8,32)"
    )
    model.add_argument(
        "--precision",
        type=_str_list,
        default=["fp32", "cast_bf16"],
        help="comma list of fp32, cast_bf16, cast_fp16 (weights and images cast), amp_bf16, amp_fp16 (autocast)",
    )
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    model.add_argument("--image-res", type=int, default=None, help="image side (default: the preset's)")
    model.add_argument("--text-len", type=int, default=30, help="padded text length L (default 30)")
    model.add_argument("--warmup", type=int, default=3, help="untimed calls per stage (default 3)")
    model.add_argument("--iters", type=int, default=20, help="timed calls per stage (default 20)")
    model.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    model.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs")
    model.add_argument("--no-flops", action="store_true", help="skip FLOP counting (and MFU)")
    model.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the encoders and BERT layers first (runtime.compile; warm-up calls compile)",
    )
    model.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"a .json file, or a folder for model-<preset>-<device>.json (default {DEFAULT_OUT_DIR}/)",
    )
    model.add_argument("--quiet", action="store_true", help="no progress bar")
    model.set_defaults(handler=_run_model)


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in _str_list(text)]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from err


def output_path(out: Path | None, preset: str, device_type: str) -> Path:
    """``out`` when it names a ``.json`` file, else ``<out or reports/bench>/model-<preset>-<device>.json``."""
    if out is not None and out.suffix == ".json":
        return out
    name = f"model-{preset.removeprefix('albef_')}-{device_type}.json"
    return (out if out is not None else DEFAULT_OUT_DIR) / name


def format_table(report: RunReport) -> str:
    """One row per stage key: throughput, latency, FLOPs, MFU and peak memory."""
    from tabulate import tabulate

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = []
    for key, s in report.stages.items():
        rows.append(
            (
                key.split("/", 1)[0],
                s.precision or "",
                s.batch_size,
                num(s.items_per_s, ".1f"),
                num(s.latency_batch.p50_ms, ".3f"),
                num(s.latency_batch.p95_ms, ".3f"),
                num(s.latency_item.p50_ms, ".3f"),
                num(None if s.flops_per_item is None else s.flops_per_item / 1e9, ".4g"),
                num(s.achieved_tflops, ".3g"),
                num(None if s.mfu is None else 100 * s.mfu, ".1f") + ("%" if s.mfu is not None else ""),
                num(s.peak_memory_mib, ".0f"),
            )
        )
    return tabulate(rows, headers=TABLE_HEADERS, tablefmt="simple", disable_numparse=True)


def _progress(quiet: bool) -> tuple[ProgressFn | None, Callable[[], None]]:
    """A progress callback (tqdm on stderr when installed, else one line per stage) and its closer."""
    if quiet:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:

        def line(done: int, total: int, key: str) -> None:
            print(f"[{done + 1}/{total}] {key}", file=sys.stderr)

        return line, lambda: None
    bars: list[Any] = []  # created at the first stage, once the total is known

    def update(done: int, total: int, key: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="stage", file=sys.stderr, dynamic_ncols=True))
        bars[0].n = done
        bars[0].set_description(key)  # refreshes the bar

    def close() -> None:
        if bars:
            bars[0].n = bars[0].total
            bars[0].close()

    return update, close


def _run_model(args: argparse.Namespace) -> int:
    """Run the model benchmark, write its report, print the table."""
    import torch

    from albef.cli.main import AlbefError
    from albef.workflows.bench import ModelBenchConfig, resolve_preset_name, run_model_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    config = ModelBenchConfig(
        preset=resolve_preset_name(args.preset),
        batch_sizes=tuple(args.batch_sizes),
        precisions=tuple(args.precision),
        device=args.device,
        image_res=args.image_res,
        text_len=args.text_len,
        warmup=args.warmup,
        iters=args.iters,
        seed=args.seed,
        count_flops=not args.no_flops,
        compile=args.compile,
    )
    progress, close = _progress(args.quiet)
    try:
        report = run_model_bench(config, progress)
    except ValueError as err:
        raise AlbefError(str(err)) from err
    finally:
        close()
    device_type = torch.device(report.environment.device).type
    path = report.save(output_path(args.out, config.preset, device_type))
    print(format_table(report))
    print(f"\nwrote {path}")
    return 0
