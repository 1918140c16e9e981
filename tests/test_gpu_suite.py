"""The GPU suite, shrunk to run on a CPU (``--smoke``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from albef.reporting.measure import stage_stats
from albef.reporting.schema import RunReport, StageStats

REPO_ROOT = Path(__file__).resolve().parents[1]


def _suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO_ROOT / "benchmarks" / "gpu_suite.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _parts() -> ModuleType:
    _suite()  # puts benchmarks/ on sys.path
    import _gpu_parts

    return _gpu_parts


def test_vqa_ranking_part_times_both_precisions_within_the_memory_budget(tmp_path: Path) -> None:
    suite, parts = _suite(), _parts()
    report = RunReport.load(parts.vqa_ranking_part(suite.SMOKE, "cpu", tmp_path))
    assert set(report.stages) == {"answer_ranking/fp32", "answer_ranking/amp_bf16"}
    for stage in report.stages.values():
        assert stage.item == "question" and stage.num_batches == suite.SMOKE.iters and stage.items_per_s > 0
    assert report.config["k"] == suite.SMOKE.k and report.environment.device == "cpu"
    # cut as the evaluator cuts: rows of a 1 GiB budget on a CPU (the tiny model's rows are small: the cap)
    assert report.config["rank_budget_mb"] == 1024 and report.config["rank_rows_per_call"]["fp32"] == 2048


def test_nlvr_part_times_pairs_in_both_precisions(tmp_path: Path) -> None:
    suite, parts = _suite(), _parts()
    report = RunReport.load(parts.nlvr_part(suite.SMOKE, "cpu", tmp_path))
    assert set(report.stages) == {"nlvr_pairs/fp32/bs2", "nlvr_pairs/amp_bf16/bs2"}
    assert all(s.item == "pair" and s.items_per_s > 0 for s in report.stages.values())


def test_flops_part_compares_the_devices_counts(tmp_path: Path) -> None:
    suite, parts = _suite(), _parts()
    record = json.loads(parts.flops_part(suite.SMOKE, "cpu", tmp_path).read_text())
    assert record["equal"] is True
    assert set(record["flops_per_item"]) == {"image_encode", "text_encode", "fusion_itm", "itm_rerank"}
    assert all(c["cpu"] > 0 for c in record["flops_per_item"].values())


def test_machine_part_names_the_attention_backend_that_ran(tmp_path: Path) -> None:
    suite, parts = _suite(), _parts()
    record = json.loads(parts.machine_part(suite.SMOKE, "cpu", tmp_path).read_text())
    assert record["nvidia_smi"] is None  # no GPU here
    assert record["sdpa_backend"]["fp32"] == ["cpu_flash"]  # the ViT's attention, from the profiler
    assert record["environment"]["device"] == "cpu"


def test_the_full_suite_targets_the_base_preset_at_384_px() -> None:
    full = _suite().FULL
    assert (full.preset, full.image_res, full.answers, full.k) == ("albef_base", 384, 3128, 128)
    assert full.rerank_ks == (16, 256)


def test_a_failing_part_is_recorded_and_the_next_still_runs(tmp_path: Path) -> None:
    suite, parts = _suite(), _parts()

    def broken() -> Path:
        raise RuntimeError("out of memory in part one")

    steps = [
        ("broken", broken),
        ("nlvr", lambda: parts.nlvr_part(suite.SMOKE, "cpu", tmp_path)),
    ]
    results = suite.run_parts(steps, tmp_path)
    assert [(r["part"], r["status"]) for r in results] == [("broken", "failed"), ("nlvr", "ok")]
    assert "out of memory in part one" in results[0]["error"]
    assert json.loads((tmp_path / "suite.json").read_text())["parts"] == results
    assert (tmp_path / "nlvr-pairs-albef_tiny-32-cpu" / "report.md").exists()  # rendered when it finished


def test_parts_after_the_budget_are_skipped(tmp_path: Path) -> None:
    suite = _suite()
    ran: list[str] = []

    def slow() -> Path:
        ran.append("slow")
        time.sleep(0.2)
        path = tmp_path / "record.json"
        path.write_text("{}")
        return path

    results = suite.run_parts([("slow", slow), ("next", slow)], tmp_path, budget_s=0.1)
    assert [(r["part"], r["status"]) for r in results] == [("slow", "ok"), ("next", "skipped")]
    assert ran == ["slow"] and "budget" in results[1]["error"]


def test_the_summary_projects_a_coco_5k_evaluation(tmp_path: Path) -> None:
    suite = _suite()
    model = RunReport(kind="benchmark", task="model", dataset="synthetic-inputs")
    model.stages = {
        "image_encode/amp_bf16/bs128": _stage(1000.0, 128, mfu=0.45),
        "text_encode/amp_bf16/bs128": _stage(20000.0, 128),
        "image_encode/amp_bf16/bs32": _stage(800.0, 32),
    }
    rerank = RunReport(kind="benchmark", task="rerank", dataset="random")
    rerank.stages = {"rerank_i2t/ours": _stage(30000.0, 4096), "rerank_t2i/ours": _stage(30000.0, 12288)}
    rerank.extra = {"speedup": 12.0}
    records = []
    for name, report in (("model", model), ("rerank-k256-device", rerank)):
        records.append({"part": name, "status": "ok", "report": str(report.save(tmp_path / f"{name}.json"))})
    summary = suite.summarise(records)
    assert summary["encoders_amp_bf16"]["image_encode"] == {
        "items_per_s": 1000.0,
        "batch_size": 128,
        "mfu": 0.45,
    }
    assert summary["rerank"]["pairs_per_s"] == pytest.approx(30000.0)
    projection = summary["coco5k_k256_projection_s"]
    assert projection["pairs"] == (5000 + 25010) * 256
    assert projection["total"] == pytest.approx(5000 / 1000 + 25010 / 20000 + (5000 + 25010) * 256 / 30000)


def _stage(items_per_s: float, batch: int, mfu: float | None = None) -> StageStats:
    stats = stage_stats([batch / items_per_s] * 4, batch, 0, stage="s", item="item", precision="amp_bf16")
    return dataclasses.replace(stats, mfu=mfu)


def test_smoke_run_writes_and_renders_every_report(tmp_path: Path) -> None:
    assert _suite().main(["--smoke", "--device", "cpu", "--out", str(tmp_path)]) == 0
    suite = json.loads((tmp_path / "suite.json").read_text())
    assert [(p["part"], p["status"]) for p in suite["parts"]] == [
        (name, "ok")
        for name in (
            "machine", "flops", "model", "rerank-k4-device", "rerank-k4-host", "vqa_ranking", "nlvr", "pretrain",
            "loader", "model-compiled",
        )
    ]  # fmt: skip
    reports = {p["part"]: Path(p["report"]) for p in suite["parts"]}
    for name in (
        "model",
        "model-compiled",
        "rerank-k4-device",
        "rerank-k4-host",
        "vqa_ranking",
        "nlvr",
        "pretrain",
    ):
        report = RunReport.load(reports[name])
        assert report.stages and all(s.items_per_s > 0 for s in report.stages.values())
        assert (reports[name].with_suffix("") / "report.md").exists()
    for name in (
        "rerank-k4-device",
        "rerank-k4-host",
    ):  # our re-ranker against the one-query loop, equal scores
        report = RunReport.load(reports[name])
        assert {"rerank_i2t/ours", "rerank_i2t/baseline"} <= set(report.stages)
        assert all(c["equal"] for c in report.extra["comparisons"].values())
    model = RunReport.load(reports["model"])
    assert any("amp_bf16" in key for key in model.stages) and any("cast_bf16" in key for key in model.stages)
    compiled = RunReport.load(reports["model-compiled"])
    assert compiled.extra["compiled"] is True and all("amp_bf16" in key for key in compiled.stages)
    loader = json.loads(reports["loader"].read_text())
    assert [row["workers"] for row in loader["loader"]][:2] == [0, 1]
    assert json.loads(reports["flops"].read_text())["equal"] is True
    assert suite["summary"]["rerank"]["pairs_per_s"] > 0
    assert suite["summary"]["coco5k_k256_projection_s"]["total"] > 0
