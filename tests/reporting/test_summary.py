"""The quickstart summary: chance levels from a manifest, the pipeline report, the page and its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from albef.reporting.schema import Metric, RunReport
from albef.reporting.summary import (
    chance_levels,
    pipeline_report,
    plot_pipeline,
    read_loss_curves,
    smooth,
    summary_markdown,
    summary_rows,
)

MANIFEST = {
    "chance": {
        "retrieval_test": {
            "t2i_r1": 0.01,
            "i2t_r1": 0.01,
            "t2i_r5": 0.05,
            "i2t_r5": 0.049,
            "t2i_r10": 0.1,
            "i2t_r10": 0.096,
        },
        "vqa_test": {"overall": 0.1357},
        "nlvr_test": {"rate": 0.5, "random_consistency": 0.12},
        "ve_test": {"rate": 1 / 3},
    }
}


def _report(task: str, **metrics: float) -> RunReport:
    report = RunReport(kind="evaluation", task=task, dataset="synthetic", split="test")
    for name, value in metrics.items():
        report.add_metric(name, value)
    return report


def test_chance_levels_come_from_the_manifest_in_percent() -> None:
    chance = chance_levels(MANIFEST).values
    assert chance["retrieval.txt_r5"] == pytest.approx(4.9)
    assert chance["retrieval.img_r10"] == pytest.approx(10.0)
    assert chance["retrieval.r_mean"] == pytest.approx((1 + 4.9 + 9.6 + 1 + 5 + 10) / 6)
    assert chance["pretrain.zero_shot_r_mean"] == chance["retrieval.r_mean"]
    assert chance["vqa.overall"] == pytest.approx(13.57)
    assert (chance["nlvr.accuracy"], chance["nlvr.consistency"]) == pytest.approx((50.0, 12.0))
    assert chance["ve.accuracy"] == pytest.approx(100 / 3)
    assert chance_levels({}).values == {}


def test_pipeline_report_prefixes_every_metric_and_judges_each_headline_against_chance() -> None:
    stages = {
        "retrieval": _report("retrieval", r_mean=40.0, txt_r1=20.0, img_r1=0.5),
        "vqa": _report("vqa", overall=46.8),
        "nlvr": _report("nlvr", accuracy=54.0, consistency=3.0),
    }
    stages["vqa"].metrics["other"] = Metric(33.4, group="answer_type")
    summary = {"zero_shot_itc": {"r_mean": 61.1, "txt_mean_rank": 5.4}, "loss_first": {"itm_loss": 0.64}}
    report = pipeline_report(stages, summary, chance_levels(MANIFEST), {"pretrain": 300.0}, {"minutes": 15})
    assert report.metrics["vqa.overall"].value == 46.8
    assert report.metrics["vqa.other"].group == "answer_type"
    assert report.metrics["pretrain.zero_shot_r_mean"].value == 61.1
    assert report.metrics["pretrain.zero_shot_txt_mean_rank"].higher_is_better is False
    assert report.metrics["pretrain.itm_loss_first"].group == "loss"
    assert report.extra["above_chance"] == {
        "pretrain.zero_shot_r_mean": True,
        "retrieval.r_mean": True,
        "retrieval.txt_r1": True,
        "retrieval.img_r1": False,  # 0.5 < 1 %
        "vqa.overall": True,
        "nlvr.accuracy": False,  # 54 is above 50, but within the 5-point margin
    }  # nlvr.consistency is shown, not judged
    rows = summary_rows(report)
    assert ("nlvr", "accuracy", "54.0", "50.0", "NOT clearly above chance") in rows
    consistency = next(r for r in rows if r[:2] == ("nlvr", "consistency"))
    assert consistency[4] == "NOT clearly above chance (not judged)"
    assert ("vqa", "overall", "46.8", "13.6", "clearly above chance") in rows
    assert RunReport.from_dict(json.loads(report.to_json())) == report  # a valid run report
    page = summary_markdown(report)
    assert "| vqa" in page and "NOT clearly above chance" in page and "300 s" in page


def test_a_stage_report_supplies_the_chance_levels_the_manifest_lacks() -> None:
    """Grounding's chance (a random proposal box) comes from its own report; the manifest still wins where set."""
    grounding = _report("grounding", testA_d=32.9, testB_d=22.0)
    grounding.extra["chance"] = {"testA_d": 19.7, "testB_d": 19.4}
    vqa = _report("vqa", overall=46.8)
    vqa.extra["chance"] = {"overall": 99.0}  # ignored: the manifest defines vqa.overall
    report = pipeline_report({"grounding": grounding, "vqa": vqa}, None, chance_levels(MANIFEST), {}, {})
    assert report.extra["chance"] == {
        "vqa.overall": pytest.approx(13.57),
        "grounding.testA_d": 19.7,
        "grounding.testB_d": 19.4,
    }
    assert report.extra["above_chance"] == {
        "vqa.overall": True,
        "grounding.testA_d": True,  # 32.9 > 19.7 + 5
        "grounding.testB_d": False,  # 22.0 is within the 5-point margin of 19.4
    }
    assert ("grounding", "testA_d", "32.9", "19.7", "clearly above chance") in summary_rows(report)


def test_loss_curves_skip_validation_records_and_plots_are_written(tmp_path: Path) -> None:
    lines = [{"step": s, "itc_loss": 5.0 - s / 10, "itm_loss": 0.6} for s in range(1, 31)]
    lines.insert(10, {"step": 10, "epoch": 0, "val/r_mean": 12.0})
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    curves = read_loss_curves(path, ("itc_loss", "itm_loss", "mlm_loss"))
    assert set(curves) == {"itc_loss", "itm_loss"} and len(curves["itc_loss"]) == 30
    assert curves["itc_loss"][0] == (1, pytest.approx(4.9))
    report = pipeline_report({"vqa": _report("vqa", overall=40.0)}, None, chance_levels(MANIFEST), {}, {})
    figures = plot_pipeline(report, {"pretrain": curves}, tmp_path / "out")
    assert [p.name for p in figures] == ["loss_pretrain.png", "tasks_vs_chance.png"]
    assert all(p.stat().st_size > 1000 for p in figures)


def test_smooth_is_a_trailing_mean() -> None:
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_pretraining_intervals_reach_the_summary_rows() -> None:
    retrieval = _report("retrieval", txt_r1=20.0, img_r1=10.0)
    retrieval.add_metric("r_mean", 40.0, n=500, interval=(37.5, 42.5))
    summary = {
        "zero_shot_itc": {"r_mean": 61.1, "txt_mean_rank": 5.4},
        "zero_shot_itc_intervals": {"r_mean": [58.6, 63.4, 500]},
    }
    report = pipeline_report({"retrieval": retrieval}, summary, chance_levels(MANIFEST), {}, {})
    zero_shot = report.metrics["pretrain.zero_shot_r_mean"]
    assert (zero_shot.n, zero_shot.ci_low, zero_shot.ci_high) == (500, 58.6, 63.4)
    assert report.metrics["pretrain.zero_shot_txt_mean_rank"].ci_low is None
    shown = {row[:2]: row[2] for row in summary_rows(report)}
    assert shown[("pretrain", "zero_shot_r_mean")] == "61.1 ± 2.4"
    assert shown[("retrieval", "r_mean")] == "40.0 ± 2.5"
    assert shown[("retrieval", "txt_r1")] == "20.0"


def test_the_chance_plot_reads_values_not_the_table_text(tmp_path: Path) -> None:
    """The table shows "40.0 ± 2.5"; the plot must use the numbers (it failed on the interval text)."""
    vqa = _report("vqa")
    vqa.add_metric("overall", 40.0, n=300, interval=(37.5, 42.5))
    report = pipeline_report({"vqa": vqa}, None, chance_levels(MANIFEST), {}, {})
    assert any("±" in row[2] for row in summary_rows(report))
    figures = plot_pipeline(report, {}, tmp_path / "out")
    assert [p.name for p in figures] == ["tasks_vs_chance.png"] and figures[0].stat().st_size > 1000


def test_the_probes_judge_itm_and_show_itc_beside_it() -> None:
    """ITM's swaps and Winoground-style group score are judged against their own chance; ITC's are only shown."""
    sugarcrepe = _report("sugarcrepe", **{"itm/swap_att": 61.3, "itm/swap_obj": 54.0, "itc/swap_att": 50.9})
    sugarcrepe.extra["chance"] = {"itm/swap_att": 50.0, "itm/swap_obj": 50.0, "itc/swap_att": 50.0}
    winoground = _report("winoground", **{"itm/group_score": 24.0, "itc/group_score": 8.3})
    winoground.extra["chance"] = {"itm/group_score": 100 / 6, "itc/group_score": 100 / 6}
    report = pipeline_report(
        {"sugarcrepe": sugarcrepe, "winoground": winoground}, None, chance_levels(MANIFEST), {}, {}
    )
    assert report.extra["above_chance"] == {
        "sugarcrepe.itm/swap_att": True,  # 61.3 > 50 + 5
        "sugarcrepe.itm/swap_obj": False,  # within the 5-point margin
        "winoground.itm/group_score": True,  # 24.0 > 16.7 + 5
    }
    rows = summary_rows(report)
    assert ("sugarcrepe", "itc/swap_att", "50.9", "50.0", "NOT clearly above chance (not judged)") in rows
    assert ("winoground", "itm/group_score", "24.0", "16.7", "clearly above chance") in rows
