"""Helpers shared by the runnable benchmarks: precision, stage keys, speed-ups, the preset driver, host load,
and the JSON + Markdown pair that a study writes.

Timing, percentiles, peak memory, FLOPs and the environment come from the library
(``albef.reporting.measure`` / ``flops`` / ``environment``), and every benchmark writes one
:class:`~albef.reporting.schema.RunReport` per preset. Warm-up calls are excluded, every inference call
runs under ``torch.inference_mode()``, and each call is timed on its own (CUDA events on GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from albef.reporting.schema import RunReport, StageStats
from albef.workflows.bench import CAST_DTYPES, precision_context

PRECISIONS = ("fp32", "cast_bf16", "amp_bf16")
"""``fp32``; ``bf16``: weights and inputs cast to bfloat16; ``amp_bf16``: fp32 weights under autocast."""

IMPLS = ("ours", "baseline")
"""The two implementations every study compares; the baseline's stage keys carry ``/baseline``."""

inference = precision_context
"""``inference_mode`` plus the precision's autocast, for every measured or compared call."""


def weight_dtype(precision: str) -> torch.dtype:
    """The dtype weights and float inputs are cast to for ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return CAST_DTYPES.get(precision, torch.float32)


def impl_key(stage: str, impl: str, precision: str, batch_size: int) -> str:
    """``image_encode/fp32/bs8`` for ours, ``image_encode/baseline/fp32/bs8`` for the baseline."""
    middle = "" if impl == "ours" else f"{impl}/"
    return f"{stage}/{middle}{precision}/bs{batch_size}"


def speedups(ours: StageStats, base: StageStats) -> dict[str, float]:
    """``speedup`` (items/s ratio) and ``speedup_p50`` (baseline p50 / ours p50, robust to a busy host)."""
    return {
        "speedup": ours.items_per_s / base.items_per_s,
        "speedup_p50": base.latency_batch.p50_ms / ours.latency_batch.p50_ms,
    }


def load_average() -> float | None:
    """The host's 1-minute load average: other processes on a shared host distort CPU timings."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def csv_list(kind: Callable[[str], Any] = str) -> Callable[[str], list[Any]]:
    """An argparse type for comma lists (``tiny,base``)."""
    return lambda text: [kind(v.strip()) for v in text.split(",") if v.strip()]


def run_presets(
    args: argparse.Namespace,
    run_preset: Callable[[str, argparse.Namespace, torch.device], RunReport],
    resolve_preset: Callable[[str], str],
    table: Callable[[list[RunReport]], str],
) -> int:
    """The benchmarks' driver: run each preset of ``args.presets``, save its report to ``args.out``
    (``{preset}``/``{device}`` filled in), then print the table of all reports."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reports = []
    for name in args.presets:
        preset = resolve_preset(name)
        report = run_preset(preset, args, device)
        out = Path(args.out.format(preset=preset.removeprefix("albef_"), device=device.type))
        report.save(out)
        print(f"wrote {out}", file=sys.stderr)
        reports.append(report)
    print(table(reports))
    return 0


def arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The script's arguments as a JSON-ready dict (the report's ``config["args"]``)."""
    return {
        k: v for k, v in vars(args).items() if isinstance(v, str | int | float | bool | list | type(None))
    }


def write_study(out: Path, stem: str, report: dict[str, Any], title: str, caption: str, table: str) -> None:
    """A study's result as ``out/<stem>.json`` (``report``) and ``out/<stem>.md`` (``# title``, the ``caption``
    paragraph, the Markdown ``table``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(f"# {title}\n\n{caption}\n\n{table}\n", encoding="utf-8")
