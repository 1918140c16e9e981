"""The GPU suite, shrunk to run on a CPU (``--smoke``)."""

from __future__ import annotations

import importlib.util
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


def test_the_full_suite_targets_the_base_preset_at_384_px() -> None:
    full = _suite().FULL
    assert (full.preset, full.image_res, full.answers, full.k) == ("albef_base", 384, 3128, 128)


@pytest.mark.slow
def test_smoke_run_writes_and_renders_every_report(tmp_path: Path) -> None:
    assert _suite().main(["--smoke", "--device", "cpu", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == [
        "model-albef_tiny-32-cpu.json",
        "pretrain-albef_tiny-32-cpu.json",
        "vqa-ranking-albef_tiny-32-cpu.json",
    ]
    for name in names:
        report = RunReport.load(tmp_path / name)
        assert report.stages and all(s.items_per_s > 0 for s in report.stages.values())
        assert (tmp_path / name.removesuffix(".json") / "report.md").exists()
