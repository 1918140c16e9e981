"""The cost of deterministic mode: pretraining samples/s with ``runtime.deterministic`` on and off.

Both sides run the same command, ``albef pretrain`` with the synthetic preset (batch 32) on the medium
synthetic world for ``--steps`` optimizer steps, as separate processes at 1 and at 2 threads
(``OMP_NUM_THREADS``), alternating on/off back to back ``--repeats`` times so that a drift of the host's
speed hits both sides alike. The figure is the median of the per-step samples/s after ``--warmup`` steps.
Both sides do the same work: the same data, model and steps; only the kernels behind
``torch.use_deterministic_algorithms`` differ (the gather backward of the ITM negatives goes serial).

    .venv/bin/python benchmarks/bench_determinism.py            # -> reports/determinism/
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

from albef.reporting.environment import cpu_model, git_revision

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_once(threads: int, deterministic: bool, steps: int, warmup: int, world: str) -> float:
    """Median samples/s of one pretraining process after ``warmup`` steps."""
    with tempfile.TemporaryDirectory() as out:
        argv = [
            *(sys.executable, "-m", "albef", "pretrain", "--output-dir", out, "--no-progress"),
            *("--max-steps", str(steps)),
            *("--set", f"data.root={world}", "--set", "data.test_file=null"),
            *("--set", f"runtime.deterministic={str(deterministic).lower()}"),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(argv, cwd=REPO_ROOT, env=env, check=True, capture_output=True)
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["samples_per_s"] for r in records[warmup:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps per process (default 80)")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the median (default 10)")
    parser.add_argument("--repeats", type=int, default=2, help="on/off pairs per thread count (default 2)")
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--world", default="runs/synthetic/medium-seed0", help="the medium synthetic world")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "determinism")
    args = parser.parse_args(argv)
    revision = git_revision()  # the code the runs below execute, before anything can change it
    rows, results = [], []
    for threads in (int(t) for t in args.threads.split(",")):
        speeds: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for deterministic in (False, True):
                speeds[deterministic].append(
                    run_once(threads, deterministic, args.steps, args.warmup, args.world)
                )
        off, on = statistics.median(speeds[False]), statistics.median(speeds[True])
        results.append({"threads": threads, "off": speeds[False], "on": speeds[True], "ratio": on / off})
        rows.append((threads, f"{off:.1f}", f"{on:.1f}", f"{on / off - 1:+.1%}"))
    table = tabulate(
        rows,
        headers=("threads", "off samples/s", "on samples/s", "change"),
        tablefmt="github",
        disable_numparse=True,
    )
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "args": {key: value for key, value in vars(args).items() if key != "out"},
        "git": revision,
        "cpu": cpu_model(),
        "results": results,
    }
    (args.out / "determinism.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "determinism.md").write_text(
        f"# Cost of deterministic mode (synthetic pretraining, batch 32)\n\n{table}\n\n"
        f"{args.steps} steps per process, median per-step samples/s after {args.warmup}, {args.repeats} "
        f"on/off pairs per thread count; {record['cpu']}, git {record['git']}.\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
