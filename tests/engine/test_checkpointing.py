"""Atomic checkpoint writes (also under a crash or SIGKILL mid-write), retention, resume lookup, RNG state."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from albef.engine import checkpointing as ckpt
from albef.errors import CheckpointError
from albef.fileio import atomic_torch_save
from tests.engine import sigkill_when_ready

HELPER = Path(__file__).with_name("_hang_in_fsync.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _payload(value: float, n: int = 16) -> dict[str, object]:
    return {
        "model": {"weights": torch.full((n,), value)},
        "optimizer": {},
        "state": {},
        "rng": {},
        "step": int(value),
    }


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_atomic_save_round_trip(tmp_path: Path) -> None:
    path = atomic_torch_save(_payload(3.0), tmp_path / "sub" / ckpt.checkpoint_name(3))
    assert path == tmp_path / "sub" / "step-00000003.pt"
    loaded = ckpt.load_training_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["weights"], torch.full((16,), 3.0))
    assert _leftovers(path.parent) == []  # no temporary file left behind


class _Crash(RuntimeError):
    pass


def test_crash_inside_torch_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = atomic_torch_save(_payload(1.0), tmp_path / "last.pt")
    before = path.read_bytes()

    def half_written(obj: object, handle: object) -> None:
        handle.write(b"PK\x03\x04 partial zip")  # type: ignore[attr-defined]
        raise _Crash("disk full")

    monkeypatch.setattr(ckpt.torch, "save", half_written)
    with pytest.raises(_Crash):
        atomic_torch_save(_payload(2.0), path)
    assert path.read_bytes() == before
    assert ckpt.load_training_checkpoint(path)["step"] == 1
    assert _leftovers(tmp_path) == []


def test_crash_at_the_rename_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = atomic_torch_save(_payload(1.0), tmp_path / "last.pt")

    def no_rename(src: object, dst: object) -> None:
        raise _Crash("power cut")

    monkeypatch.setattr(ckpt.os, "replace", no_rename)
    with pytest.raises(_Crash):
        atomic_torch_save(_payload(2.0), path)
    assert ckpt.load_training_checkpoint(path)["step"] == 1
    assert _leftovers(tmp_path) == []


def test_a_new_checkpoint_never_appears_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / ckpt.checkpoint_name(7)

    def crash_after_write(obj: object, handle: object) -> None:
        handle.write(b"x" * 1000)  # type: ignore[attr-defined]
        raise _Crash("killed")

    monkeypatch.setattr(ckpt.torch, "save", crash_after_write)
    with pytest.raises(_Crash):
        atomic_torch_save(_payload(7.0), target)
    assert not target.exists()
    assert ckpt.list_checkpoints(tmp_path) == []


def test_sigkill_during_a_checkpoint_write(tmp_path: Path) -> None:
    """A process killed while its (large) checkpoint is on disk but not yet renamed leaves the old one intact."""
    directory = tmp_path / ckpt.CHECKPOINT_DIR
    previous = atomic_torch_save(_payload(4.0), directory / ckpt.checkpoint_name(4))
    target = directory / ckpt.checkpoint_name(6)
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), str(target), str(ready)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    sigkill_when_ready(proc, ready, "fsync of the checkpoint", timeout_s=60)
    partial = [p for p in directory.iterdir() if p.name.startswith(f".{target.name}.") and p.suffix == ".tmp"]
    assert len(partial) == 1 and partial[0].stat().st_size > 1_000_000  # killed mid-write
    assert not target.exists()
    assert ckpt.list_checkpoints(directory) == [previous]
    assert ckpt.resolve_resume("auto", tmp_path)[0] == previous
    assert ckpt.load_training_checkpoint(previous)["step"] == 4


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for step in (1, 2, 10, 3, 100):
        atomic_torch_save(_payload(float(step)), tmp_path / ckpt.checkpoint_name(step))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "step-7.pt.bak").write_text("not a checkpoint either")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        ckpt.checkpoint_name(s) for s in (1, 2, 3, 10, 100)
    ]  # by step, not by name or mtime
    ckpt.prune_checkpoints(tmp_path, keep_last=2, newest_step=100)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [ckpt.checkpoint_name(s) for s in (10, 100)]
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "step-7.pt.bak").exists()
    ckpt.prune_checkpoints(tmp_path, keep_last=0, newest_step=100)  # 0 keeps everything
    assert len(ckpt.list_checkpoints(tmp_path)) == 2
    ckpt.prune_checkpoints(tmp_path, keep_last=1, newest_step=100)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [ckpt.checkpoint_name(100)]


def test_list_checkpoints_of_a_missing_directory(tmp_path: Path) -> None:
    assert ckpt.list_checkpoints(tmp_path / "nope") == []


def test_resolve_resume(tmp_path: Path) -> None:
    assert ckpt.resolve_resume(None, tmp_path) is None
    assert ckpt.resolve_resume("", tmp_path) is None
    assert ckpt.resolve_resume("auto", tmp_path) is None  # nothing yet: start fresh
    directory = tmp_path / ckpt.CHECKPOINT_DIR
    for step in (2, 12, 4):
        atomic_torch_save(_payload(float(step)), directory / ckpt.checkpoint_name(step))
    path, payload = ckpt.resolve_resume("auto", tmp_path)
    assert path == directory / ckpt.checkpoint_name(12) and payload["step"] == 12
    explicit = directory / ckpt.checkpoint_name(4)
    assert ckpt.resolve_resume(str(explicit), tmp_path)[0] == explicit
    with pytest.raises(CheckpointError, match=r"no-such\.pt: no such checkpoint file"):
        ckpt.resolve_resume(str(tmp_path / "no-such.pt"), tmp_path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ckpt.resolve_resume(str(directory), tmp_path)  # a directory is not a checkpoint


def _draws() -> tuple[torch.Tensor, np.ndarray, float, float, float]:
    return torch.rand(5), np.random.rand(5), random.random(), random.gauss(0.0, 1.0), float(np.random.randn())


def test_rng_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(9)
    random.gauss(0.0, 1.0)  # leave a cached gaussian in python's state
    np.random.randn()  # and in numpy's
    path = atomic_torch_save({**_payload(0.0), "rng": ckpt.rng_state()}, tmp_path / "rng.pt")
    expected = _draws()
    for _ in range(3):
        _draws()  # move every generator on
    ckpt.set_rng_state(ckpt.load_training_checkpoint(path)["rng"])  # weights_only load
    got = _draws()
    assert torch.equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2:] == expected[2:]


def test_git_revision_outside_git_is_none(tmp_path: Path) -> None:
    from albef.reporting.environment import git_revision

    assert git_revision(tmp_path) is None
