"""The run report schema: lossless JSON round trip and errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from albef.reporting.schema import (
    SCHEMA_VERSION,
    CheckpointInfo,
    Environment,
    LatencyStats,
    PeakMemory,
    ReportError,
    RunReport,
    StageStats,
)


def full_report() -> RunReport:
    latency = LatencyStats(mean_ms=2.0, p50_ms=1.5, p95_ms=3.25, p99_ms=3.85, min_ms=1.0, max_ms=4.0)
    stage = StageStats(
        stage="image_encode/bf16/bs8",
        items_per_s=1234.5,
        batch_size=8,
        num_batches=4,
        items=30,
        warmup_batches=2,
        latency_batch=latency,
        latency_item=LatencyStats(0.25, 0.2, 0.4, 0.5, 0.125, 0.5),
        samples_ms=[1.0, 1.5, 1.5, 4.0],
        item="image",
        precision="bf16",
        flops_per_item=1.5e9,
        achieved_tflops=1.85,
        mfu=0.0019,
        peak_memory_mib=321.5,
    )
    report = RunReport(
        kind="evaluation",
        task="retrieval",
        dataset="flickr30k",
        split="test",
        model_preset="albef_base",
        checkpoint=CheckpointInfo(path="/ckpt/flickr.pth", sha256="ab" * 32),
        stages={"image_encode/bf16/bs8": stage},
        memory=PeakMemory(kind="cuda_max_allocated", mib=2048.0),
        environment=Environment(device="cuda:0", device_name="NVIDIA H100 80GB HBM3", cuda="12.4", seed=3),
        config={"k_test": 128, "nested": {"lr": 1e-4, "list": [1, 2]}},
        extra={"recall_at_k": {"1": 90.0}},
    )
    report.add_metric("txt_r1", 95.9)
    report.add_metric("loss", 0.5, higher_is_better=False, unit="")
    report.add_metric("yes_no", 88.0, group="answer_type")
    return report


def test_round_trip_through_json_file_is_lossless(tmp_path: Path) -> None:
    report = full_report()
    path = report.save(tmp_path / "sub" / "report.json")
    loaded = RunReport.load(path)
    assert loaded == report
    assert isinstance(loaded.stages["image_encode/bf16/bs8"].latency_batch, LatencyStats)
    assert isinstance(loaded.checkpoint, CheckpointInfo) and isinstance(loaded.memory, PeakMemory)
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert next(iter(json.loads(path.read_text()))) == "schema_version"


def test_minimal_report_round_trips() -> None:
    report = RunReport(kind="benchmark", task="model", dataset="synthetic-inputs")
    assert RunReport.from_dict(json.loads(report.to_json())) == report


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, "1", None])
def test_wrong_schema_version_names_the_file(tmp_path: Path, version: object) -> None:
    data = full_report().to_dict()
    data["schema_version"] = version
    path = write(tmp_path, data)
    with pytest.raises(ReportError, match="schema_version") as err:
        RunReport.load(path)
    assert str(path) in str(err.value)


def test_missing_schema_version_names_the_file(tmp_path: Path) -> None:
    data = full_report().to_dict()
    del data["schema_version"]
    path = write(tmp_path, data)
    with pytest.raises(ReportError, match="schema_version None") as err:
        RunReport.load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("where", "name"),
    [
        ((), "surprise"),
        (("environment",), "gpu_count"),
        (("stages", "image_encode/bf16/bs8"), "tokens_per_s"),
    ],
)
def test_unknown_fields_are_rejected_with_the_file_and_field(
    tmp_path: Path, where: tuple[str, ...], name: str
) -> None:
    data = full_report().to_dict()
    target = data
    for key in where:
        target = target[key]
    target[name] = 1
    path = write(tmp_path, data)
    with pytest.raises(ReportError, match=name) as err:
        RunReport.load(path)
    assert str(path) in str(err.value)


def test_missing_field_and_bad_json_name_the_file(tmp_path: Path) -> None:
    data = full_report().to_dict()
    del data["stages"]
    path = write(tmp_path, data)
    with pytest.raises(ReportError, match="missing field") as err:
        RunReport.load(path)
    assert str(path) in str(err.value)
    path.write_text("{not json")
    with pytest.raises(ReportError, match="not JSON"):
        RunReport.load(path)
    with pytest.raises(ReportError, match="cannot read"):
        RunReport.load(tmp_path / "absent.json")


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ReportError, match="unknown report kind"):
        RunReport(kind="benchmarks", task="model", dataset="x")


def test_intervals_round_trip_and_version_1_reports_are_still_read(tmp_path: Path) -> None:
    report = full_report()
    report.add_metric("img_r1", 58.8, n=1000, interval=(56.1, 61.5))
    loaded = RunReport.load(report.save(tmp_path / "v2.json"))
    metric = loaded.metrics["img_r1"]
    assert (metric.n, metric.ci_low, metric.ci_high) == (1000, 56.1, 61.5)
    assert metric.half_width == pytest.approx(2.7) and metric.formatted() == "58.8 ± 2.7"
    assert metric.contains(60.0) is True and metric.contains(62.0) is False
    # A report written by the previous albef: schema 1, metrics without n/ci, no environment.deterministic.
    old = full_report().to_dict()
    old["schema_version"] = 1
    for entry in old["metrics"].values():
        for key in ("n", "ci_low", "ci_high"):
            entry.pop(key)
    old["environment"].pop("deterministic")
    legacy = RunReport.load(write(tmp_path, old))
    assert legacy.metrics["txt_r1"].value == 95.9 and legacy.metrics["txt_r1"].half_width is None
    assert legacy.metrics["txt_r1"].formatted() == "95.9" and legacy.metrics["txt_r1"].contains(1.0) is None
