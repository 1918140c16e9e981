"""``albef report render|paper|compare`` through the command's own parser and handlers (exit statuses 0/1/2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from albef.cli import report as report_cli
from albef.cli.main import COMMAND_MODULES, main
from albef.reporting.schema import LatencyStats, RunReport, StageStats


def run_cli(argv: list[str]) -> int:
    """Parse ``argv`` with a parser holding only ``report`` and call its handler, as ``albef`` does."""
    parser = argparse.ArgumentParser(prog="albef")
    report_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def make_report(txt_r1: float = 70.0, items_per_s: float = 100.0, task: str = "retrieval") -> RunReport:
    latency = LatencyStats(2.0, 1.5, 3.0, 3.5, 1.0, 4.0)
    stage = StageStats("image_encode", items_per_s, 8, 4, 32, 1, latency, latency, [1.0, 2.0, 4.0], "image")
    report = RunReport(
        kind="evaluation", task=task, dataset="coco", split="test", stages={"image_encode": stage}
    )
    report.add_metric("txt_r1", txt_r1)
    report.add_metric("img_r1", 55.0)
    return report


@pytest.fixture()
def baseline(tmp_path: Path) -> Path:
    return make_report().save(tmp_path / "baseline.json")


def current(tmp_path: Path, **kwargs: float | str) -> Path:
    return make_report(**kwargs).save(tmp_path / "current.json")  # type: ignore[arg-type]


def compare(baseline: Path, current_path: Path, *extra: str) -> int:
    return run_cli(["report", "compare", "--baseline", str(baseline), "--current", str(current_path), *extra])


def test_compare_exit_1_on_metric_drop_beyond_tolerance(
    tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert compare(baseline, current(tmp_path, txt_r1=68.5)) == 1
    out = capsys.readouterr().out
    assert "regressed" in out and out.rstrip().splitlines()[-1].startswith("FAIL")


def test_compare_exit_1_on_throughput_drop_beyond_fraction(tmp_path: Path, baseline: Path) -> None:
    path = current(tmp_path, items_per_s=85.0)
    assert compare(baseline, path) == 1
    assert compare(baseline, path, "--speed-tol", "0.2") == 0
    assert compare(baseline, path, "--no-speed") == 0


def test_compare_exit_0_within_tolerance_and_on_improvement(
    tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert compare(baseline, current(tmp_path, txt_r1=69.5, items_per_s=95.0)) == 0
    assert compare(baseline, current(tmp_path, txt_r1=80.0, items_per_s=300.0)) == 0
    out = capsys.readouterr().out
    assert "improved" in out and "PASS" in out


def test_compare_per_metric_tolerance(tmp_path: Path, baseline: Path) -> None:
    path = current(tmp_path, txt_r1=67.0)
    assert compare(baseline, path) == 1
    assert compare(baseline, path, "--tol", "txt_r1=3") == 0
    assert compare(baseline, path, "--metric-tol", "5", "--tol", "txt_r1=0.5") == 1


def test_compare_exit_2_on_another_schema_version(
    tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_report().to_dict() | {"schema_version": 99}
    bad = tmp_path / "v99.json"
    bad.write_text(json.dumps(data))
    assert compare(baseline, bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "schema_version 99" in err and "v99.json" in err


def test_compare_exit_2_on_unreadable_path(
    tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert compare(baseline, tmp_path / "missing.json") == 2
    assert "missing.json" in capsys.readouterr().err


def test_compare_exit_2_on_mismatched_task(
    tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert compare(baseline, current(tmp_path, task="vqa")) == 2
    assert "different task" in capsys.readouterr().err


def test_compare_rejects_malformed_tolerances(baseline: Path) -> None:
    for bad in (["--tol", "txt_r1"], ["--metric-tol", "-1"], ["--speed-tol", "fast"]):
        with pytest.raises(SystemExit) as exit_info:
            compare(baseline, baseline, *bad)
        assert exit_info.value.code == 2


def test_render_defaults_to_a_folder_named_after_the_report(baseline: Path) -> None:
    assert run_cli(["report", "render", str(baseline)]) == 0
    folder = baseline.with_suffix("")
    assert {"report.md", "metrics.csv", "stages.csv"} <= {p.name for p in folder.iterdir()}


def test_render_several_runs_writes_a_comparison(tmp_path: Path, baseline: Path) -> None:
    other = current(tmp_path, txt_r1=71.0)
    assert run_cli(["report", "render", str(baseline), str(other), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "comparison.md").read_text()
    assert "| baseline " in text and "| current " in text
    assert (tmp_path / "out" / "current" / "report.md").is_file()


def test_paper_prints_deltas_and_writes_markdown(
    tmp_path: Path, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "paper" / "paper.md"
    assert run_cli(["report", "paper", str(baseline), "--model", "ALBEF 4M", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| -3.10 " in printed and printed == out.read_text()


def test_paper_exit_2_on_unknown_model(baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["report", "paper", str(baseline), "--model", "ALBEF 9M"]) == 2
    assert "ALBEF 4M" in capsys.readouterr().err


@pytest.mark.skipif(
    "albef.cli.report" not in COMMAND_MODULES, reason="report is not registered in albef.cli.main yet"
)
def test_the_albef_entry_point_runs_report(tmp_path: Path, baseline: Path) -> None:
    assert main(["report", "compare", "--baseline", str(baseline), "--current", str(baseline)]) == 0
    assert main(["report", "compare", "--baseline", str(baseline), "--current", str(tmp_path)]) == 2


def test_compare_uses_the_combined_interval_unless_told_not_to(tmp_path: Path) -> None:
    def with_ci(value: float, name: str) -> Path:
        run = make_report(txt_r1=value)
        run.add_metric("txt_r1", value, n=100, interval=(value - 3.0, value + 4.0))  # half-width 3.5
        return run.save(tmp_path / name)

    base = with_ci(70.0, "base.json")
    assert compare(base, with_ci(66.0, "inside.json")) == 0  # -4.0, combined half-width 4.95
    assert compare(base, with_ci(65.0, "outside.json")) == 1  # -5.0
    assert compare(base, with_ci(66.0, "inside.json"), "--no-intervals") == 1  # the 1-point tolerance
