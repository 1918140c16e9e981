"""Rendering run reports: Markdown rows, CSV files that read back to the report, plots, run comparisons."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from albef.reporting.render import recall_curves, render, report_markdown
from albef.reporting.schema import (
    CheckpointInfo,
    Environment,
    LatencyStats,
    PeakMemory,
    RunReport,
    StageStats,
)
from albef.reporting.side_by_side import comparison_frame, comparison_markdown, render_many, unique_labels

RECALLS = {"txt_r1": 70.0, "txt_r5": 90.1, "txt_r10": 95.0, "img_r1": 55.25, "img_r5": 80.0, "img_r10": 88.5}


def stage(key: str, items_per_s: float, item: str = "image", precision: str | None = "bf16") -> StageStats:
    """A stage with distinct, hand-picked numbers in every field."""
    return StageStats(
        stage=key,
        items_per_s=items_per_s,
        batch_size=8,
        num_batches=4,
        items=30,
        warmup_batches=2,
        latency_batch=LatencyStats(mean_ms=2.0, p50_ms=1.5, p95_ms=3.25, p99_ms=3.85, min_ms=1.0, max_ms=4.0),
        latency_item=LatencyStats(0.25, 0.1875, 0.40625, 0.48125, 0.125, 0.5),
        samples_ms=[1.0, 1.5, 1.5, 4.0],
        item=item,
        precision=precision,
        flops_per_item=1.5e9,
        achieved_tflops=1.85,
        mfu=0.0019,
        peak_memory_mib=321.5,
    )


def retrieval_report(**overrides: float) -> RunReport:
    """A COCO test retrieval run with the six recalls, a grouped metric, two stages and memory."""
    report = RunReport(
        kind="evaluation",
        task="retrieval",
        dataset="coco",
        split="test",
        model_preset="albef_base",
        checkpoint=CheckpointInfo(path="/ckpt/coco.pth", sha256="0123456789ab" + "f" * 52),
        stages={
            "image_encode": stage("image_encode", 1200.0),
            "itm_rerank": stage("itm_rerank", 3.5, "pair", None),
        },
        memory=PeakMemory(kind="cuda_max_allocated", mib=2048.0),
        environment=Environment(device="cuda:0", device_name="NVIDIA H100", precision="fp16", git="abc1234"),
    )
    for name, value in {**RECALLS, **overrides}.items():
        report.add_metric(name, value)
    report.add_metric("txt_mean_rank", 3.5, higher_is_better=False, unit="")
    report.add_metric("short", 61.0, group="caption_length")
    return report


def test_render_writes_markdown_csv_and_plots(tmp_path: Path) -> None:
    written = render(retrieval_report(), tmp_path / "out")
    names = {path.name for path in written}
    assert names == {
        "report.md",
        "metrics.csv",
        "stages.csv",
        "throughput.png",
        "latency.png",
        "recall_at_k.png",
        "group_caption_length.png",
    }
    for path in written:
        assert path.is_file() and path.parent == tmp_path / "out"
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_rows_equal_the_report(tmp_path: Path) -> None:
    report = retrieval_report()
    render(report, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["metric"]) == list(report.metrics)
    for row in metrics.itertuples(index=False):
        metric = report.metrics[row.metric]
        assert row.value == metric.value
        assert bool(row.higher_is_better) is metric.higher_is_better
        assert (None if pd.isna(row.unit) else row.unit) == (metric.unit or None)
        assert (None if pd.isna(row.group) else row.group) == metric.group
    stages = pd.read_csv(tmp_path / "stages.csv").set_index("key")
    assert list(stages.index) == list(report.stages)
    for key, s in report.stages.items():
        row = stages.loc[key]
        assert row["items_per_s"] == s.items_per_s and row["batch_size"] == s.batch_size
        assert row["batch_p50_ms"] == s.latency_batch.p50_ms and row["batch_p99_ms"] == s.latency_batch.p99_ms
        assert row["item_mean_ms"] == s.latency_item.mean_ms and row["item_max_ms"] == s.latency_item.max_ms
        assert row["mfu"] == s.mfu and row["flops_per_item"] == s.flops_per_item
        assert row["item"] == s.item
    # A stage without its own precision inherits the run's.
    assert list(stages["precision"]) == ["bf16", "fp16"]


def test_markdown_has_header_every_metric_stage_and_memory() -> None:
    report = retrieval_report()
    text = report_markdown(report)
    lines = text.splitlines()
    for name, metric in report.metrics.items():
        assert any(line.startswith(f"| {name} ") and f"| {metric.value:.2f} " in line for line in lines), name
    assert "### Metrics by caption_length" in text
    for key in report.stages:
        assert any(line.startswith(f"| {key} ") for line in lines)
    assert "| 1200.0 " in text and "| 0.2% " in text  # items/s and MFU
    for needle in ("0123456789ab", "NVIDIA H100", "abc1234", "fp16", "2048.0 MiB", "coco", "albef_base"):
        assert needle in text


def test_empty_report_renders_tables_without_plots(tmp_path: Path) -> None:
    report = RunReport(kind="benchmark", task="model", dataset="synthetic")
    names = {path.name for path in render(report, tmp_path)}
    assert names == {"report.md", "metrics.csv", "stages.csv"}
    assert pd.read_csv(tmp_path / "stages.csv").empty
    assert "No timed stage." in (tmp_path / "report.md").read_text()


def test_recall_curves_from_metrics_and_from_extra() -> None:
    curves = recall_curves(retrieval_report())
    assert curves == {
        "TR (image->text)": {1: 70.0, 5: 90.1, 10: 95.0},
        "IR (text->image)": {1: 55.25, 5: 80.0, 10: 88.5},
    }
    report = RunReport(
        kind="evaluation", task="ve", dataset="snli_ve", extra={"recall_at_k": {"5": 2.0, "1": 1.0}}
    )
    assert recall_curves(report) == {"recall@K": {1: 1.0, 5: 2.0}}
    report.extra["recall_at_k"] = {"a": {"1": 3.0, "x": 9.0}, "b": {"2": True}}
    assert recall_curves(report) == {"a": {1: 3.0}}


def test_comparison_of_two_runs() -> None:
    first = retrieval_report()
    second = retrieval_report(txt_r1=72.5)
    del second.metrics["img_r10"]
    second.stages["text_encode"] = stage("text_encode", 5000.0, "text")
    frame = comparison_frame([first, second], ["base", "new"])
    assert list(frame["run"]) == ["base", "new"]
    assert list(frame["txt_r1"]) == [70.0, 72.5]
    assert "short" not in frame.columns  # grouped metrics stay out of the headline table
    assert list(frame.columns[-3:]) == ["items/s image_encode", "items/s itm_rerank", "items/s text_encode"]
    lines = comparison_markdown([first, second], ["base", "new"]).splitlines()
    header = next(line for line in lines if line.startswith("| run "))
    assert all(f" {name} " in header for name in (*RECALLS, "items/s text_encode"))
    base = next(line for line in lines if line.startswith("| base "))
    new = next(line for line in lines if line.startswith("| new "))
    assert "| 70.00 " in base and "| 88.50 " in base and "| - " in base  # base has no text_encode
    assert "| 72.50 " in new and "| 5000.00 " in new
    with pytest.raises(ValueError, match="labels"):
        comparison_frame([first], ["a", "b"])


def test_render_many_writes_each_run_and_the_comparison(tmp_path: Path) -> None:
    written = render_many([retrieval_report(), retrieval_report(txt_r1=71.0)], ["a", "b"], tmp_path)
    assert (tmp_path / "a" / "report.md") in written and (tmp_path / "b" / "stages.csv") in written
    assert "| b " in (tmp_path / "comparison.md").read_text()
    assert list(pd.read_csv(tmp_path / "comparison.csv")["txt_r1"]) == [70.0, 71.0]
    with pytest.raises(ValueError, match="unique"):
        render_many([retrieval_report()] * 2, ["a", "a"], tmp_path)


def test_unique_labels() -> None:
    assert unique_labels(["r/base.json", "r/cur.json"]) == ["base", "cur"]
    assert unique_labels(["x/run.json", "y/run.json"]) == ["x_run", "y_run"]
    assert unique_labels(["x/run.json", "x/run.json"]) == ["x_run", "x_run-2"]


def test_markdown_and_csv_show_the_interval_and_sample_size(tmp_path: Path) -> None:
    report = retrieval_report()
    report.add_metric("img_r1", 58.8, n=1000, interval=(56.1, 61.5))
    lines = report_markdown(report).splitlines()
    cells = {
        row[0]: row[1:4] for row in ([c.strip() for c in line.split("|")[1:-1]] for line in lines) if row
    }
    assert cells["img_r1"] == ["58.80 ± 2.70", "[56.10, 61.50]", "1000"]
    assert cells["txt_r1"] == ["70.00", "-", "-"]
    render(report, tmp_path)
    frame = pd.read_csv(tmp_path / "metrics.csv").set_index("metric")
    assert (frame.loc["img_r1", "ci_low"], frame.loc["img_r1", "ci_high"], frame.loc["img_r1", "n"]) == (
        56.1,
        61.5,
        1000,
    )
    assert pd.isna(frame.loc["txt_r1", "ci_low"])
