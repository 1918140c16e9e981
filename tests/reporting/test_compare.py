"""The regression gate: metric tolerances in points, throughput tolerance as a fraction, missing entries."""

from __future__ import annotations

import math

import pytest

from albef.reporting.compare import (
    ComparisonResult,
    MetricDelta,
    compare_reports,
    comparison_text,
    metric_tolerance,
    relative_change,
)
from albef.reporting.schema import LatencyStats, ReportError, RunReport, StageStats


def stage(items_per_s: float) -> StageStats:
    latency = LatencyStats(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    return StageStats("image_encode", items_per_s, 8, 4, 32, 1, latency, latency)


def report(
    txt_r1: float = 70.0, loss: float = 0.5, items_per_s: float = 100.0, task: str = "retrieval"
) -> RunReport:
    run = RunReport(kind="evaluation", task=task, dataset="coco", split="test")
    run.add_metric("txt_r1", txt_r1)
    run.add_metric("img_r1", 55.0)
    run.add_metric("loss", loss, higher_is_better=False, unit="")
    run.stages["image_encode"] = stage(items_per_s)
    return run


def statuses(result: ComparisonResult) -> dict[str, str]:
    out = {row.name: row.status for row in result.metrics}
    return out | {row.stage: row.status for row in result.stages}


def test_identical_runs_pass() -> None:
    result = compare_reports(report(), report())
    assert set(statuses(result).values()) == {"ok"} and not result.failed
    assert "PASS" in comparison_text(result)


@pytest.mark.parametrize(
    ("current", "name", "status"),
    [
        (report(txt_r1=68.9), "txt_r1", "regressed"),  # -1.1 points, tolerance 1.0
        (report(txt_r1=69.0), "txt_r1", "ok"),  # exactly at the tolerance
        (report(txt_r1=71.5), "txt_r1", "improved"),
        (report(loss=1.6), "loss", "regressed"),  # lower is better: +1.1 is a regression
        (report(loss=-0.6), "loss", "improved"),
        (report(txt_r1=math.nan), "txt_r1", "regressed"),
    ],
)
def test_metric_moves_against_its_direction_beyond_tolerance(
    current: RunReport, name: str, status: str
) -> None:
    result = compare_reports(report(), current)
    assert statuses(result)[name] == status
    assert result.failed is (status == "regressed")


def test_metric_change_is_in_points() -> None:
    row = compare_reports(report(), report(txt_r1=67.5)).metrics[0]
    assert (row.baseline, row.current, row.change, row.tolerance) == (70.0, 67.5, -2.5, 1.0)


def test_per_metric_tolerance_overrides() -> None:
    current = report(txt_r1=67.5)
    assert compare_reports(report(), current).failed
    assert not compare_reports(report(), current, metric_tols={"txt_r1": 3.0}).failed
    assert not compare_reports(report(), current, metric_tol={"txt_r1": 3.0}).failed
    assert compare_reports(report(), current, metric_tol=5.0, metric_tols={"txt_r1": 2.0}).failed
    assert metric_tolerance("img_r1", {"txt_r1": 3.0}, None) == 1.0


@pytest.mark.parametrize(("items_per_s", "status"), [(89.0, "regressed"), (91.0, "ok"), (120.0, "improved")])
def test_throughput_drop_beyond_the_fraction_regresses(items_per_s: float, status: str) -> None:
    result = compare_reports(report(), report(items_per_s=items_per_s), speed_tol=0.10)
    row = result.stages[0]
    assert row.status == status and row.change == pytest.approx(items_per_s / 100.0 - 1)
    assert result.failed is (status == "regressed")


def test_speed_can_be_left_out() -> None:
    result = compare_reports(report(), report(items_per_s=10.0), speed_tol=None)
    assert result.stages == [] and not result.failed


def test_missing_metric_fails_new_metric_and_missing_stage_do_not() -> None:
    current = report()
    del current.metrics["img_r1"]
    current.add_metric("txt_r5", 90.0)
    del current.stages["image_encode"]
    result = compare_reports(report(), current)
    assert statuses(result) == {
        "txt_r1": "ok",
        "img_r1": "missing",
        "loss": "ok",
        "txt_r5": "new",
        "image_encode": "missing",
    }
    assert result.failed and [f.name for f in result.failures if isinstance(f, MetricDelta)] == ["img_r1"]
    assert len(result.failures) == 1
    assert "FAIL: 1" in comparison_text(result) and "img_r1" in comparison_text(result).splitlines()[-1]


def test_reports_of_different_task_dataset_or_split_are_refused() -> None:
    with pytest.raises(ReportError, match="task"):
        compare_reports(report(), report(task="vqa"))
    other = report()
    other.split = "val"
    with pytest.raises(ReportError, match="split"):
        compare_reports(report(), other)


def test_negative_tolerance_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        compare_reports(report(), report(), metric_tols={"txt_r1": -1.0})


def test_relative_change_with_a_zero_baseline() -> None:
    assert relative_change(0.0, 0.0) == 0.0 and relative_change(0.0, 5.0) == math.inf
    assert relative_change(200.0, 150.0) == -0.25


def with_interval(value: float, half: float) -> RunReport:
    """A run whose ``txt_r1`` carries a bootstrap interval of half-width ``half`` (and 100 images)."""
    run = report(txt_r1=value)
    run.add_metric("txt_r1", value, n=100, interval=(value - half, value + half))
    return run


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (65.1, "ok"),  # -4.9: inside the combined interval sqrt(3.0**2 + 4.0**2) = 5.0
        (64.9, "regressed"),  # -5.1: outside it
        (75.1, "improved"),
    ],
)
def test_a_change_regresses_only_outside_the_combined_interval(value: float, status: str) -> None:
    baseline, current = with_interval(70.0, 3.0), with_interval(value, 4.0)
    row = compare_reports(baseline, current).metrics[0]
    assert (row.name, row.status, row.basis) == ("txt_r1", status, "interval")
    assert row.tolerance == pytest.approx(5.0)
    assert "(CI)" in comparison_text(compare_reports(baseline, current))


def test_intervals_fall_back_to_the_absolute_tolerance_when_either_side_lacks_one() -> None:
    one_sided = compare_reports(with_interval(70.0, 3.0), report(txt_r1=67.5)).metrics[0]
    assert (one_sided.basis, one_sided.tolerance, one_sided.status) == ("absolute", 1.0, "regressed")
    switched_off = compare_reports(with_interval(70.0, 3.0), with_interval(67.5, 4.0), use_intervals=False)
    assert (switched_off.metrics[0].basis, switched_off.metrics[0].status) == ("absolute", "regressed")


def test_a_per_metric_tolerance_overrides_the_interval() -> None:
    result = compare_reports(with_interval(70.0, 3.0), with_interval(67.5, 4.0), metric_tols={"txt_r1": 2.0})
    assert (result.metrics[0].basis, result.metrics[0].tolerance, result.metrics[0].status) == (
        "absolute",
        2.0,
        "regressed",
    )
