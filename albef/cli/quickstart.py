"""``albef quickstart``: the whole method on the embedded synthetic world, in minutes on a CPU.

World -> pretraining (ITC + ITM + MLM) -> in parallel: retrieval finetune + evaluation, VQA finetune +
evaluation, text assignment -> NLVR² finetune + evaluation, SNLI-VE finetune + evaluation, grounding finetune +
Grad-CAM evaluation -> one report
(:mod:`albef.reporting.summary`). Each stage is an ordinary ``albef`` command run as a subprocess with its own
log, so a stage can be re-run by hand with the command the log starts with. The pipeline itself is
:mod:`albef.workflows.quickstart`; this module parses the options and calls it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from albef.workflows.quickstart import (
    DEFAULT_MINUTES,
    build_stages,
    clear_previous_run,
    epochs_for,
    resolve_quickstart_precision,
    run_pipeline,
    say,
    summarise,
)

DESCRIPTION = """\
Run the whole method on the embedded synthetic world (offline, CPU): generate the world, pretrain ALBEF
from scratch (ITC + ITM + MLM), then finetune and evaluate image-text retrieval, VQA, NLVR2 (after
text-assignment pretraining), SNLI-VE and weakly-supervised grounding (Grad-CAM ranks the proposal boxes of
RefCOCO+-style expressions), two stages at a time; pretrain a second stage in which ITM alone learns
relation and swap pairs and score that model on the Winoground- and SugarCrepe-style probes with ITC, ITM
and ITM + ITC; and write one report (Markdown + JSON + plots: loss curves, every task against its chance
level, throughput per stage, grounding heat maps) to --report-dir.

About 17 minutes on 2 CPU cores that compute bf16 in hardware (AVX512-BF16 or AMX; longer without) at the
default --minutes 15 (the two pretraining stages take 12 of them); --minutes M scales every stage's epochs
by M/15 (fewer minutes, lower accuracy). The same seed gives the same numbers. Each stage's log,
checkpoints and run report are under --output-dir/<stage>/.
"""


def register(subparsers: Any) -> None:
    """Add the ``quickstart`` command."""
    parser = subparsers.add_parser(
        "quickstart",
        help="the whole method on the embedded synthetic world: pretrain, finetune, evaluate, report (CPU)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_MINUTES,
        help="scales the default epochs by M/15 (default 15: about 17 minutes on 2 CPU cores)",
    )
    parser.add_argument("--size", choices=["small", "medium"], default="medium", help="world size")
    parser.add_argument("--seed", type=int, default=0, help="world and training seed (default 0)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs/quickstart"),
        help="stage runs (default runs/quickstart)",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=Path("reports/quickstart"),
        help="the summary report (default reports/quickstart)",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "amp_bf16"],
        default="auto",
        help="training and evaluation precision of the stages; auto (default): bf16 autocast for the "
        "one-thread stages where the CPU computes bf16 in hardware (AVX512-BF16 or AMX), fp32 elsewhere",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="stages run at the same time after pretraining (default: CPUs, max 2)",
    )
    parser.add_argument(
        "--world-only", action="store_true", help="only generate the world and print its summary"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from albef.cli.data import ProgressBars, print_world_summary
    from albef.cli.main import AlbefError
    from albef.data.synthetic import DEFAULT_IMAGE_SIZE, ensure_world, world_matches
    from albef.reporting.summary import summary_rows

    if args.minutes <= 0:
        raise AlbefError(f"--minutes must be positive, got {args.minutes}")
    world = Path(f"runs/synthetic/{args.size}-seed{args.seed}")
    reused = world_matches(world, args.size, args.seed, DEFAULT_IMAGE_SIZE)
    bars = ProgressBars()
    tic = time.perf_counter()
    try:  # a folder holding something else is a SyntheticWorldError: one line, exit 2
        world = ensure_world(world, args.size, args.seed, progress=bars)
    finally:
        bars.close()
    print_world_summary(world, reused)
    if args.world_only:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = args.jobs or max(1, min(2, cpus))
    threads = max(1, cpus)
    stages = build_stages(args.output_dir, world, args.size, args.seed, args.minutes, threads, args.precision)
    clear_previous_run(args.output_dir, stages)
    first = stages[0]
    layout = f"{first.ranks} DDP ranks x 1 thread" if first.ranks > 1 else f"{first.threads} threads"
    say(
        f"{len(stages)} stages, {jobs} at a time after pretraining ({layout}); precision: pretraining "
        f"{resolve_quickstart_precision(args.precision, first.threads)}, the others "
        f"{resolve_quickstart_precision(args.precision)}; epochs {epochs_for(args.minutes)}"
    )
    done = run_pipeline(stages, args.output_dir, jobs)
    markdown = summarise(done, args.output_dir, args.report_dir, world, args)
    from tabulate import tabulate

    from albef.reporting.schema import RunReport

    report = RunReport.load(args.report_dir / "quickstart.json")
    print(
        tabulate(
            summary_rows(report), headers=("stage", "metric", "measured", "chance", ""), tablefmt="github"
        )
    )
    print(f"\nreport: {markdown}  ({time.perf_counter() - tic:.0f} s in all)")
    below = [k for k, ok in report.extra.get("above_chance", {}).items() if not ok]
    if below:
        print(f"not clearly above chance: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0
