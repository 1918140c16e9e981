"""CI regression gate: a small fixed synthetic run, compared with the committed baseline.

The run: the small synthetic world (seed 0), 60 pretraining steps of the synthetic preset, then the official
retrieval evaluation (ITC top-k + ITM re-rank) of that checkpoint on the world's test split. Its run report is
compared with ``reports/ci/baseline.json`` through ``albef report compare``: exit 1 when a recall drops by more
than ``--metric-tol`` points or a stage's throughput by more than ``--speed-tol`` (a fraction; CI hosts are
noisy, so the default only catches large slow-downs).

Refresh the baseline deliberately (after a change that is meant to move the numbers), and commit it with a
message that says why::

    .venv/bin/python benchmarks/ci_gate.py --refresh

Usage in CI (``.ci/run``): ``.venv/bin/python benchmarks/ci_gate.py``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from albef.cli.main import main as albef

REPO_ROOT = Path(__file__).resolve().parents[1]
MIN_STAGE_MS = 5.0
"""Stages faster than this per batch (baseline mean) are left out of the throughput comparison."""
BASELINE = REPO_ROOT / "reports" / "ci" / "baseline.json"
WORLD = "runs/synthetic/small-seed0"
SETS = (
    f"data.root={WORLD}",
    "data.synthetic_size=small",
    "data.synthetic_seed=0",
    "data.num_workers=0",
    "runtime.seed=0",
)


def _sets(*extra: str) -> list[str]:
    return [arg for s in (*SETS, *extra) for arg in ("--set", s)]


def run_gate_config(out: Path, steps: int) -> Path:
    """Pretrain ``steps`` steps and evaluate retrieval; returns the evaluation's run report."""
    if out.exists():
        shutil.rmtree(out)
    pretrain = out / "pretrain"
    code = albef(
        [
            *("pretrain", "--config", "synthetic_pretrain", "--output-dir", str(pretrain), "--no-progress"),
            *("--max-steps", str(steps)),
            *_sets("data.test_file=null", "optim.warmup_steps=10"),
        ]
    )
    if code != 0:
        raise SystemExit(f"ci gate: pretraining failed (exit {code})")
    checkpoint = sorted((pretrain / "checkpoints").glob("step-*.pt"))[-1]
    code = albef(
        [
            *("evaluate", "retrieval", "--config", "synthetic_retrieval", "--checkpoint", str(checkpoint)),
            *("--out", str(out / "eval")),
            *_sets(),
        ]
    )
    if code != 0:
        raise SystemExit(f"ci gate: evaluation failed (exit {code})")
    reports = sorted((out / "eval").glob("retrieval-*-test.json"))
    if len(reports) != 1:
        raise SystemExit(f"ci gate: expected one retrieval report in {out / 'eval'}, found {reports}")
    return reports[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "ci-gate", help="run directory")
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="committed baseline report")
    parser.add_argument("--steps", type=int, default=60, help="pretraining steps (default 60)")
    # The small test split has 16 images: one image moving out of the top K changes a recall by 6.25 points.
    parser.add_argument("--metric-tol", type=float, default=7.0, help="allowed recall drop in points")
    parser.add_argument("--speed-tol", type=float, default=0.6, help="allowed throughput drop (fraction)")
    parser.add_argument("--refresh", action="store_true", help="write the baseline instead of comparing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # identical numerics on every host, whatever its core count
    report = run_gate_config(args.out, args.steps)
    if args.refresh:
        args.baseline.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report, args.baseline)
        print(f"baseline written: {args.baseline}")
        return 0
    baseline, current = timed_stages_only(args.baseline, report, args.out)
    compare = ["report", "compare", "--baseline", str(baseline), "--current", str(current)]
    return albef([*compare, "--metric-tol", str(args.metric_tol), "--speed-tol", str(args.speed_tol)])


def timed_stages_only(
    baseline: Path, current: Path, out: Path, min_ms: float = MIN_STAGE_MS
) -> tuple[Path, Path]:
    """Copies of both reports without the stages too short to time reliably (baseline mean < ``min_ms`` per
    batch: the ITC matrix product and the top-k take microseconds, and their throughput is noise)."""
    from albef.reporting.schema import RunReport

    reports = [RunReport.load(baseline), RunReport.load(current)]
    keep = {k for k, s in reports[0].stages.items() if s.latency_batch.mean_ms >= min_ms}
    paths = []
    for name, report in zip(("gate-baseline.json", "gate-current.json"), reports, strict=True):
        report.stages = {k: v for k, v in report.stages.items() if k in keep}
        paths.append(report.save(out / name))
    return paths[0], paths[1]


if __name__ == "__main__":
    sys.exit(main())
