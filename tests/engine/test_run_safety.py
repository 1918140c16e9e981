"""Runs that never lose or mix up work, end to end through ``albef pretrain`` in subprocesses.

SIGTERM and SIGINT stop a run at the next step boundary with a checkpoint and a documented exit status, and
``--resume auto`` then ends bit-identical to an uninterrupted run; a second run into a folder in use is
refused; a killed run's lock is taken over; a corrupt newest checkpoint is skipped; a full disk is one line.
Every case also checks that no earlier file was lost or changed.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from albef.engine import checkpointing as ckpt
from albef.errors import EXIT_SIGINT, EXIT_SIGTERM, RunFolderError, StorageError
from tests.engine import assert_identical, pretrain_argv, small_world

REPO_ROOT = Path(__file__).resolve().parents[2]
HANG = Path(__file__).with_name("_pretrain_hang.py")
STEPS = 12
SETS = ("runtime.checkpoint_every=4", "runtime.keep_last=10", "data.test_file=null")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


def _argv(world: Path, out: Path, *extra: str) -> list[str]:
    return [*pretrain_argv(world, out, *SETS), "--max-steps", str(STEPS), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "albef", *argv],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,  # type: ignore[arg-type]
    )


def _start(at: int, ready: Path, argv: list[str], pause: float = 600.0) -> subprocess.Popen[str]:
    """Start a run that pauses ``pause`` s before each step after step ``at``; return once it got there."""
    proc = subprocess.Popen(
        [sys.executable, str(HANG), str(at), str(ready), *argv],
        cwd=REPO_ROOT,
        env={**_env(), "ALBEF_TEST_PAUSE": str(pause)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) early:\n{proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the run never reached the step"
        time.sleep(0.02)
    return proc


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _final(run: Path) -> dict[str, object]:
    return ckpt.load_training_checkpoint(run / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(STEPS))


@pytest.fixture(scope="module")
def uninterrupted(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = _run(_argv(world, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, EXIT_SIGTERM), (signal.SIGINT, EXIT_SIGINT)])
def test_a_signal_checkpoints_at_the_next_step_and_resume_is_bit_identical(
    world: Path, uninterrupted: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    run, ready = tmp_path / "run", tmp_path / "ready"
    proc = _start(
        5, ready, _argv(world, run), pause=0.3
    )  # between steps 5 and 6: no periodic checkpoint near
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"albef pretrain: stopped by {sig.name} after step 6; checkpoint "), last
    assert last.endswith("continue with --resume auto")
    steps = [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(run / ckpt.CHECKPOINT_DIR)]
    assert steps == [4, 6]  # the periodic one and the one the signal wrote
    resumed = _run([*_argv(world, run), "--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _final(run), _final(uninterrupted)
    for part in ("model", "optimizer", "rng", "state"):
        assert_identical(a[part], b[part], part)


def test_a_second_run_into_a_folder_in_use_is_refused_and_a_killed_runs_lock_taken_over(
    world: Path, tmp_path: Path
) -> None:
    run, ready = tmp_path / "run", tmp_path / "ready"
    holder = _start(5, ready, _argv(world, run))
    try:
        before = snapshot(run)
        second = _run(_argv(world, run, "--resume", "auto"))
        assert second.returncode == RunFolderError.exit_code
        assert second.stderr.startswith(
            f"albef pretrain: error: {run} is in use by another run (pid {holder.pid} on host "
        ), second.stderr
        assert snapshot(run) == before  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    third = _run(_argv(world, run, "--resume", "auto"))
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"albef: taking over the stale lock of {run} (pid {holder.pid} " in third.stderr
    assert not (run / ".lock").exists()  # released at the end
    assert ckpt.list_checkpoints(run / ckpt.CHECKPOINT_DIR)[-1].name == ckpt.checkpoint_name(STEPS)


def test_a_fresh_run_into_a_used_folder_is_refused_and_deletes_nothing(
    uninterrupted: Path, world: Path
) -> None:
    before = snapshot(uninterrupted)
    proc = _run([*pretrain_argv(world, uninterrupted, *SETS), "--max-steps", "3"])
    assert proc.returncode == RunFolderError.exit_code
    assert proc.stderr.startswith(f"albef pretrain: error: {uninterrupted} already holds a run started ")
    assert "continue it with --resume auto" in proc.stderr
    assert snapshot(uninterrupted) == before


def test_resume_auto_of_a_run_with_another_config_is_refused(uninterrupted: Path, world: Path) -> None:
    before = snapshot(uninterrupted)
    proc = _run([*_argv(world, uninterrupted, "--set", "optim.lr=0.5"), "--resume", "auto"])
    assert proc.returncode == RunFolderError.exit_code
    assert "another run than this one (optim.lr: " in proc.stderr and "-> 0.5" in proc.stderr
    assert snapshot(uninterrupted) == before


def test_resume_auto_skips_a_corrupt_newest_checkpoint(
    world: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert _run([*pretrain_argv(world, run, *SETS), "--max-steps", str(STEPS)]).returncode == 0
    directory = run / ckpt.CHECKPOINT_DIR
    newest = directory / ckpt.checkpoint_name(STEPS)
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a crash of the file system
    earlier = snapshot(directory)
    earlier.pop(newest.name)
    proc = _run([*_argv(world, run), "--resume", "auto"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        f"albef: warning: skipping an unreadable checkpoint: {newest}: not a readable checkpoint"
        in proc.stderr
    )
    after = snapshot(directory)
    assert all(after[name] == digest for name, digest in earlier.items())  # nothing else touched
    a, b = _final(run), _final(uninterrupted)  # redone from step 8: the same bits
    for part in ("model", "optimizer", "rng", "state"):
        assert_identical(a[part], b[part], part)


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous_one(
    world: Path, tmp_path: Path
) -> None:
    run, ready = tmp_path / "run", tmp_path / "ready"
    argv = [*pretrain_argv(world, run, *SETS), "--max-steps", "8"]
    killed = _start(5, ready, argv)  # a run that got past its step-4 checkpoint, then died
    killed.kill()
    killed.wait()
    before = snapshot(run / ckpt.CHECKPOINT_DIR)
    assert list(before) == [ckpt.checkpoint_name(4)]
    size = (run / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(4)).stat().st_size
    proc = _run([*argv, "--resume", "auto"], preexec_fn=lambda: _limit_file_size(size // 2))
    assert proc.returncode == StorageError.exit_code, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"albef pretrain: error: could not write {run / ckpt.CHECKPOINT_DIR}/"), line
    assert "File too large" in line and line.endswith("earlier files are intact")
    assert snapshot(run / ckpt.CHECKPOINT_DIR) == before  # the step-4 checkpoint, unchanged; no partial file
