"""The GPU suite, shrunk to run on a CPU (``--smoke``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from albef.reporting.schema import RunReport

REPO_ROOT = Path(__file__).resolve().parents[1]


def _suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO_ROOT / "benchmarks" / "gpu_suite.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_vqa_ranking_part_times_both_precisions(tmp_path: Path) -> None:
    suite = _suite()
    report = RunReport.load(suite.bench_vqa_ranking(suite.SMOKE, "cpu", tmp_path))
    assert set(report.stages) == {"answer_ranking/fp32", "answer_ranking/amp_bf16"}
    for stage in report.stages.values():
        assert stage.item == "question" and stage.num_batches == suite.SMOKE.iters and stage.items_per_s > 0
    assert report.config["k"] == suite.SMOKE.k and report.environment.device == "cpu"
    assert report.config["rank_chunk_size"] == 2048  # chunked as the evaluator ranks, not one huge call


def test_the_full_suite_targets_the_base_preset_at_384_px() -> None:
    full = _suite().FULL
    assert (full.preset, full.image_res, full.answers, full.k) == ("albef_base", 384, 3128, 128)


def test_a_failing_part_is_recorded_and_the_next_still_runs(tmp_path: Path) -> None:
    suite = _suite()

    def broken() -> Path:
        raise RuntimeError("out of memory in part one")

    parts = [
        ("broken", broken),
        ("vqa_ranking", lambda: suite.bench_vqa_ranking(suite.SMOKE, "cpu", tmp_path)),
    ]
    results = suite.run_parts(parts, tmp_path)
    assert [(r["part"], r["status"]) for r in results] == [("broken", "failed"), ("vqa_ranking", "ok")]
    assert "out of memory in part one" in results[0]["error"]
    assert json.loads((tmp_path / "suite.json").read_text())["parts"] == results
    assert (tmp_path / "vqa-ranking-albef_tiny-32-cpu" / "report.md").exists()  # rendered when it finished


@pytest.mark.slow
def test_smoke_run_writes_and_renders_every_report(tmp_path: Path) -> None:
    assert _suite().main(["--smoke", "--device", "cpu", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == [
        "model-albef_tiny-32-cpu.json",
        "pretrain-albef_tiny-32-cpu.json",
        "rerank-albef_tiny-32-k4-device-cpu.json",
        "rerank-albef_tiny-32-k4-host-cpu.json",
        "suite.json",
        "vqa-ranking-albef_tiny-32-cpu.json",
    ]
    for name in names[:-3] + names[-1:]:
        report = RunReport.load(tmp_path / name)
        assert report.stages and all(s.items_per_s > 0 for s in report.stages.values())
        assert (tmp_path / name.removesuffix(".json") / "report.md").exists()
    for name in names[2:4]:  # our re-ranker against the one-query loop, equal scores
        report = RunReport.load(tmp_path / name)
        assert {"rerank_i2t/ours", "rerank_i2t/baseline"} <= set(report.stages)
        assert all(c["equal"] for c in report.extra["comparisons"].values())
    model = RunReport.load(tmp_path / "model-albef_tiny-32-cpu.json")
    assert any("amp_bf16" in key for key in model.stages)  # the evaluators' precision is measured
    parts = json.loads((tmp_path / "suite.json").read_text())["parts"]
    assert [p["status"] for p in parts] == ["ok"] * 5
