"""A retrieval evaluation killed during the re-rank continues with ``--resume`` from its saved partial results
and gives exactly the score matrices and metrics of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from albef.evaluation.partial import PartialScores
from albef.reporting.schema import RunReport
from tests.evaluation.test_retrieval_cli import STEM, checkpoint, evaluate, overrides, set_args, world

REPO_ROOT = Path(__file__).resolve().parents[2]
HANG = Path(__file__).with_name("_rerank_hang.py")
EVERY = "50"  # pairs between saves: the small world's test split has about 1,000 pairs at k = 8

__all__ = ["checkpoint", "world"]  # the fixtures, shared with test_retrieval_cli


def _kill_after_first_save(world: Path, weights: Path, out: Path, tmp_path: Path) -> None:
    ready = tmp_path / "saved"
    argv = ["evaluate", "retrieval", "--checkpoint", str(weights), "--out", str(out), "--k", "8"]
    argv += ["--save-every", EVERY, "--no-progress", *set_args(overrides(world))]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(HANG), str(ready), *argv], cwd=REPO_ROOT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, f"the evaluation ended (rc {proc.returncode}) before its first save"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
