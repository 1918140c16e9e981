"""The CI gate's checks on the committed baseline: it passes against itself, and each kind of change fails
the check meant for it (the full runs on real regressions are ``benchmarks/gate_power.py``)."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from albef.reporting.schema import RunReport

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "reports" / "ci" / "baseline.json"


@pytest.fixture(scope="module")
def gate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_gate", REPO_ROOT / "benchmarks" / "ci_gate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ci_gate"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    return json.loads(BASELINE.read_text(encoding="utf-8"))


def verdicts(
    gate: ModuleType, base: dict[str, Any], current: dict[str, Any], mode: str = "auto"
) -> dict[str, bool]:
    return {check.name: check.passed for check in gate.run_checks(base, current, mode)}


def test_the_baseline_is_clearly_above_chance_and_complete(
    gate: ModuleType, baseline: dict[str, Any]
) -> None:
    report = RunReport.from_dict(baseline)  # a valid run report, with every recall's interval
    assert (report.task, report.split) == ("retrieval", "test")
    chance = baseline["extra"]["gate"]["chance_r_mean"]
    assert chance == pytest.approx(5.3, abs=0.1)
    for name in ("zero_shot_r_mean", "r_mean"):
        metric = report.metrics[name]
        assert metric.ci_low is not None and metric.ci_low > gate.CHANCE_MULTIPLE * chance, name
    trajectory = baseline["extra"]["gate"]["trajectory"]
    assert len(trajectory) == 62 * gate.EPOCHS and [r["step"] for r in trajectory[:3]] == [1, 2, 3]
    assert {"itc_loss", "itm_loss", "mlm_loss", "loss", "lr", "temp"} <= set(trajectory[0])
    assert not any(gate.is_timing(key) for key in trajectory[0])
    logged = {"samples_per_s", "data_time", "data_share", "step_time", "peak_memory_mb", "epoch"}
    assert all(gate.is_timing(key) for key in logged)  # every host measurement the trainer logs
    facts = baseline["extra"]["gate"]["platform"]
    assert facts["threads"] == gate.THREADS and facts["libraries"]["torch"] and facts["cpu"]["model"]


def test_the_baseline_passes_against_itself(gate: ModuleType, baseline: dict[str, Any]) -> None:
    assert verdicts(gate, baseline, copy.deepcopy(baseline)) == {
        "trajectory": True,
        "accuracy": True,
        "speed": True,
    }
    assert all(verdicts(gate, baseline, copy.deepcopy(baseline), "foreign").values())


def nudged(baseline: dict[str, Any], step: int, key: str, factor: float) -> dict[str, Any]:
    current = copy.deepcopy(baseline)
    current["extra"]["gate"]["trajectory"][step - 1][key] *= factor
    return current


def test_exact_trajectory_fails_on_one_changed_loss_anywhere(
    gate: ModuleType, baseline: dict[str, Any]
) -> None:
    late = nudged(baseline, 700, "mlm_loss", 1 + 1e-7)
    assert verdicts(gate, baseline, late)["trajectory"] is False
    (check,) = [c for c in gate.run_checks(baseline, late) if c.name == "trajectory"]
    assert any("step 700 mlm_loss" in line for line in check.lines)
    # Another platform drifts: the foreign rule looks at the first steps only, within a relative tolerance.
    assert verdicts(gate, baseline, late, "foreign")["trajectory"] is True
    early_small = nudged(baseline, 5, "itc_loss", 1 + gate.FOREIGN_RTOL / 2)
    early_large = nudged(baseline, 5, "itc_loss", 1 + 3 * gate.FOREIGN_RTOL)
    assert verdicts(gate, baseline, early_small, "foreign")["trajectory"] is True
    assert verdicts(gate, baseline, early_large, "foreign")["trajectory"] is False


def test_exact_trajectory_also_compares_every_final_metric(
    gate: ModuleType, baseline: dict[str, Any]
) -> None:
    current = copy.deepcopy(baseline)
    current["metrics"]["txt_mean_rank"]["value"] += 0.01
    result = verdicts(gate, baseline, current)
    assert result["trajectory"] is False and result["accuracy"] is True  # ranks carry no interval


def test_a_platform_difference_switches_to_the_foreign_rule(
    gate: ModuleType, baseline: dict[str, Any]
) -> None:
    current = nudged(baseline, 700, "mlm_loss", 1.01)
    current["extra"]["gate"]["platform"]["cpu_capability"] = "AVX2"
    checks = gate.run_checks(baseline, current)
    assert all(c.passed for c in checks)
    assert "cpu_capability: " in checks[0].lines[0] and "-> AVX2" in checks[0].lines[0]


def with_metric(baseline: dict[str, Any], name: str, shift: float) -> dict[str, Any]:
    current = copy.deepcopy(baseline)
    metric = current["metrics"][name]
    metric["value"] += shift
    metric["ci_low"] += shift
    metric["ci_high"] += shift
    return current


def test_accuracy_fails_outside_the_combined_interval_only(
    gate: ModuleType, baseline: dict[str, Any]
) -> None:
    metric = baseline["metrics"]["zero_shot_r_mean"]
    half = (metric["ci_high"] - metric["ci_low"]) / 2
    combined = (2 * half**2) ** 0.5
    inside = with_metric(baseline, "zero_shot_r_mean", -0.9 * combined)
    outside = with_metric(baseline, "zero_shot_r_mean", -1.1 * combined)
    assert verdicts(gate, baseline, inside, "foreign")["accuracy"] is True
    assert verdicts(gate, baseline, outside, "foreign")["accuracy"] is False


def test_accuracy_fails_below_twice_chance(gate: ModuleType, baseline: dict[str, Any]) -> None:
    current = copy.deepcopy(baseline)
    current["extra"]["gate"]["chance_r_mean"] = baseline["metrics"]["r_mean"]["value"]  # as if at chance
    assert verdicts(gate, baseline, current)["accuracy"] is False


def test_speed_is_normalised_by_the_calibration_kernel(gate: ModuleType, baseline: dict[str, Any]) -> None:
    slow_code = copy.deepcopy(baseline)
    slow_code["metrics"]["pretrain_samples_per_s"]["value"] *= 0.4
    assert verdicts(gate, baseline, slow_code)["speed"] is False
    slow_host = copy.deepcopy(slow_code)  # everything 2.5x slower, the GEMM too: the host, not the code
    slow_host["extra"]["gate"]["calibration_gflops"] *= 0.4
    for stage in slow_host["stages"].values():
        stage["items_per_s"] *= 0.4
    assert verdicts(gate, baseline, slow_host)["speed"] is True
    rerank = copy.deepcopy(baseline)
    rerank["stages"]["itm_rerank"]["items_per_s"] *= 0.3
    assert verdicts(gate, baseline, rerank)["speed"] is False


def test_a_missing_recall_fails(gate: ModuleType, baseline: dict[str, Any]) -> None:
    current = copy.deepcopy(baseline)
    del current["metrics"]["img_r10"]
    assert verdicts(gate, baseline, current)["accuracy"] is False
