"""An evaluation killed part of the way continues with ``--resume`` from its saved partial results and gives
exactly an uninterrupted run's results: retrieval (its re-rank scores) and VQA (its answers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from albef.evaluation.partial import PartialScores
from albef.reporting.schema import RunReport
from tests.engine import sigkill_when_ready
from tests.evaluation.test_retrieval_cli import (
    STEM,
    checkpoint,
    evaluate,
    overrides,
    random_checkpoint,
    set_args,
    world,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
HANG = Path(__file__).with_name("_rerank_hang.py")
EVERY = "50"  # pairs between saves: the small world's test split has about 1,000 pairs at k = 8

__all__ = ["checkpoint", "world"]  # the fixtures, shared with test_retrieval_cli


def _kill_after_first_save(world: Path, weights: Path, out: Path, tmp_path: Path) -> None:
    argv = ["evaluate", "retrieval", "--checkpoint", str(weights), "--out", str(out), "--k", "8"]
    _kill_after_first_save_of([*argv, "--save-every", EVERY, *set_args(overrides(world))], tmp_path)


def _kill_after_first_save_of(argv: list[str], tmp_path: Path) -> None:
    ready = tmp_path / "saved"
    argv = [*argv, "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(HANG), str(ready), *argv]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE)
    sigkill_when_ready(proc, ready, "its first save of partial results")


def test_sigkill_during_the_rerank_then_resume_gives_the_uninterrupted_result(
    world: Path, checkpoint: Path, tmp_path: Path
) -> None:
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert evaluate(world, checkpoint, reference, "--save-scores", "--save-every", EVERY) == 0
    assert not list((reference / ".partial").rglob("*.pt"))  # a complete run leaves no partial results

    _kill_after_first_save(world, checkpoint, run, tmp_path)
    partial = run / ".partial" / STEM / "rank0.pt"
    saved = torch.load(partial, weights_only=True)
    assert saved["scores"].shape[0] == int(EVERY) < saved["pairs"].shape[0]  # killed part of the way
    assert not (run / f"{STEM}.json").exists()

    assert evaluate(world, checkpoint, run, "--save-scores", "--save-every", EVERY, "--resume") == 0
    got, expected = (torch.load(d / f"{STEM}-scores.pt", weights_only=True) for d in (run, reference))
    for name in ("scores_i2t", "scores_t2i"):
        assert torch.equal(got[name], expected[name]), name
    resumed, uninterrupted = RunReport.load(run / f"{STEM}.json"), RunReport.load(reference / f"{STEM}.json")
    assert resumed.extra["resumed_pairs"] == int(EVERY) and uninterrupted.extra["resumed_pairs"] == 0
    assert {k: m.value for k, m in resumed.metrics.items()} == {
        k: m.value for k, m in uninterrupted.metrics.items()
    }
    assert not partial.exists()


def test_partial_results_of_another_evaluation_are_refused(tmp_path: Path) -> None:
    pairs = torch.arange(10)
    PartialScores(tmp_path / "rank0.pt", "key-a").save(pairs, torch.zeros(4))
    assert PartialScores(tmp_path / "rank0.pt", "key-a", resume=True).load(pairs).shape == (4,)
    assert (
        PartialScores(tmp_path / "rank0.pt", "key-a", resume=False).load(pairs).numel() == 0
    )  # a fresh start
    with pytest.raises(ValueError, match="partial results of another evaluation"):
        PartialScores(tmp_path / "rank0.pt", "key-b", resume=True).load(pairs)
    with pytest.raises(ValueError, match="partial results of another evaluation"):
        PartialScores(tmp_path / "rank0.pt", "key-a", resume=True).load(torch.arange(11))


@pytest.fixture(scope="module")
def vqa_checkpoint(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VQA checkpoint of the tiny test model (random weights, our layout)."""
    return random_checkpoint("vqa", world, tmp_path_factory.mktemp("vqa-ckpt") / "vqa.pt")


def test_sigkill_during_vqa_ranking_then_resume_gives_the_uninterrupted_answers(
    world: Path, vqa_checkpoint: Path, tmp_path: Path
) -> None:
    def argv(out: Path) -> list[str]:
        base = ["evaluate", "vqa", "--config", "synthetic_vqa", "--checkpoint", str(vqa_checkpoint)]
        sets = set_args(overrides(world, "data.batch_size_test=4"))
        return [*base, "--output-dir", str(out), "--k", "4", "--save-every", "4", *sets]

    from albef.cli.main import main

    reference, run = tmp_path / "reference", tmp_path / "run"
    assert main(argv(reference)) == 0
    _kill_after_first_save_of(argv(run), tmp_path)  # killed after the first batch of 4 questions
    assert (run / ".partial" / "vqa_test_report" / "rank0.pt").is_file()
    assert main([*argv(run), "--resume"]) == 0
    name = "vqa_result_test.json"
    assert (run / name).read_bytes() == (reference / name).read_bytes()  # every answer the same
    resumed, uninterrupted = (RunReport.load(d / "vqa_test_report.json") for d in (run, reference))
    assert resumed.extra["resumed_questions"] == 4 and uninterrupted.extra["resumed_questions"] == 0
    assert {k: m.value for k, m in resumed.metrics.items()} == {
        k: m.value for k, m in uninterrupted.metrics.items()
    }
    assert not list((run / ".partial").rglob("*.pt"))
