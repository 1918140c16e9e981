"""Deterministic mode: repeat runs at two threads and SIGKILL-interrupted runs end bit-identical.

Without ``runtime.deterministic`` two of these runs differed (the two-thread backward of the ITM negatives'
gather adds with atomics), so the end-to-end tests use the synthetic preset's own model (image tokens of
16 x 37 x 128 elements, above the size where the CPU kernel goes parallel) at two threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from albef.config.io import ConfigError
from albef.engine import checkpointing as ckpt
from albef.engine.determinism import (
    CUBLAS_WORKSPACE,
    NondeterministicOpError,
    configure_determinism,
    explain_nondeterministic_op,
    wants_determinism,
)
from tests.engine import assert_identical, sigkill_when_ready, small_world

REPO_ROOT = Path(__file__).resolve().parents[2]
HANG_HELPER = Path(__file__).with_name("_pretrain_hang.py")
STEPS = 40
RUN_SETS = (
    "data.synthetic_size=small",
    "data.batch_size_train=16",  # 48 images: 3 steps an epoch, so 40 steps cross 13 epoch boundaries
    "data.num_workers=0",
    "data.test_file=null",
    "optim.warmup_steps=5",
    "runtime.checkpoint_every=5",
    "runtime.keep_last=20",
    "runtime.device=cpu",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


def _argv(world: Path, out: Path) -> list[str]:
    argv = ["pretrain", "--output-dir", str(out), "--no-progress", "--max-steps", str(STEPS)]
    for override in (f"data.root={world}", *RUN_SETS):
        argv += ["--set", override]
    return argv


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "2"}


def _run(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "albef", *argv], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _run_until_killed(argv: list[str], hang_at: int, ready: Path) -> None:
    """Start the run, SIGKILL it while it hangs before optimizer step ``hang_at + 1``."""
    proc = subprocess.Popen(
        [sys.executable, str(HANG_HELPER), str(hang_at), str(ready), *argv],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sigkill_when_ready(proc, ready, f"step {hang_at + 1}", timeout_s=180)
    ready.unlink()


def _final(run: Path) -> dict[str, object]:
    return ckpt.load_training_checkpoint(run / ckpt.CHECKPOINT_DIR / f"step-{STEPS:08d}.pt")


def _assert_bit_identical(a: dict[str, object], b: dict[str, object]) -> None:
    for part in ("model", "optimizer", "rng", "state"):
        assert_identical(a[part], b[part], part)


@pytest.fixture(scope="module")
def uninterrupted(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("det-uninterrupted")
    _run(_argv(world, out))
    return out


def test_two_runs_at_two_threads_end_bit_identical(world: Path, uninterrupted: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    _run(_argv(world, again))
    _assert_bit_identical(_final(again), _final(uninterrupted))


def test_three_sigkills_after_periodic_checkpoints_then_resume_is_bit_identical(
    world: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run, ready = tmp_path / "run", tmp_path / "hanging"
    argv = _argv(world, run)
    # Each kill comes mid-epoch (3 steps an epoch, a checkpoint at each end) right after or a step after a
    # periodic checkpoint (every 5 steps); the resumed run redoes the steps after it.
    for hang_at, newest in ((11, 10), (20, 20), (26, 25)):
        _run_until_killed([*argv, "--resume", "auto"], hang_at, ready)
        assert ckpt.list_checkpoints(run / ckpt.CHECKPOINT_DIR)[-1].name == ckpt.checkpoint_name(newest)
    _run([*argv, "--resume", "auto"])
    _assert_bit_identical(_final(run), _final(uninterrupted))


def test_default_is_on_for_cpu_and_off_for_cuda() -> None:
    assert wants_determinism(None, torch.device("cpu")) is True
    assert wants_determinism(None, torch.device("cuda")) is False
    assert wants_determinism(True, torch.device("cuda")) is True
    assert wants_determinism(False, torch.device("cpu")) is False


def test_configure_sets_torch_and_on_cuda_the_cublas_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        cpu = configure_determinism(None, torch.device("cpu"))
        assert cpu.enabled and torch.are_deterministic_algorithms_enabled()
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        # Nothing here touches the GPU: the settings are flags and an environment variable.
        cuda = configure_determinism(True, torch.device("cuda"))
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert f"CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE}" in cuda.describe()
        off = configure_determinism(None, torch.device("cuda"))
        assert not off.enabled and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic = before[1]


def test_an_op_without_a_deterministic_kernel_is_named() -> None:
    err = RuntimeError(
        "index_add_cuda_ does not have a deterministic implementation, but you set "
        "'torch.use_deterministic_algorithms(True)'. You can turn off determinism just for this operation"
    )
    message = explain_nondeterministic_op(err)
    assert message is not None and message.startswith("index_add_cuda_ has no deterministic implementation")
    assert "runtime.deterministic=false" in message
    assert explain_nondeterministic_op(RuntimeError("shape mismatch")) is None
    assert issubclass(NondeterministicOpError, ConfigError)  # the CLI prints it as one line (exit 2)
