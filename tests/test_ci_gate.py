"""The CI regression gate: the committed baseline passes against itself; a degraded run fails it."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from albef.cli.main import main
from albef.reporting.schema import RunReport

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "reports" / "ci" / "baseline.json"


def _gate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_gate", REPO_ROOT / "benchmarks" / "ci_gate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compare(baseline: Path, current: Path) -> int:
    return main(
        ["report", "compare", "--baseline", str(baseline), "--current", str(current), "--metric-tol", "7"]
    )


def test_the_committed_baseline_is_a_retrieval_report_with_timed_stages() -> None:
    report = RunReport.load(BASELINE)
    assert (report.task, report.split) == ("retrieval", "test")
    assert {"txt_r1", "img_r1", "r_mean"} <= set(report.metrics)
    assert {"image_encode", "text_encode", "itm_rerank"} <= set(report.stages)


@pytest.mark.parametrize("degrade", ["accuracy", "speed", "missing metric", "none"])
def test_a_degraded_run_fails_the_gate(tmp_path: Path, degrade: str) -> None:
    current = RunReport.load(BASELINE)
    if degrade == "accuracy":  # a bug that costs two images out of the top 10
        current.metrics["img_r10"] = dataclasses.replace(
            current.metrics["img_r10"], value=current.metrics["img_r10"].value - 12.5
        )
    elif degrade == "speed":
        stage = current.stages["itm_rerank"]
        current.stages["itm_rerank"] = dataclasses.replace(stage, items_per_s=stage.items_per_s * 0.3)
    elif degrade == "missing metric":
        del current.metrics["r_mean"]
    baseline, gated = _gate().timed_stages_only(BASELINE, current.save(tmp_path / "current.json"), tmp_path)
    assert _compare(baseline, gated) == (0 if degrade == "none" else 1)


def test_stages_too_short_to_time_are_left_out_of_the_gate(tmp_path: Path) -> None:
    baseline, _ = _gate().timed_stages_only(BASELINE, BASELINE, tmp_path)
    kept = RunReport.load(baseline).stages
    original = RunReport.load(BASELINE).stages
    assert set(kept) == {k for k, s in original.items() if s.latency_batch.mean_ms >= 5.0}
    assert "itm_rerank" in kept and len(kept) < len(original)
