"""Tests of ``albef.engine``: optimizer and schedules, checkpoints, the trainer loop, distributed helpers.

The training tests run ``albef pretrain`` on the ``small`` synthetic world with a model shrunk to a few
thousand parameters (:data:`TINY_OVERRIDES`), so a step takes tens of milliseconds on one CPU thread.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

TINY_OVERRIDES = (
    "model.vision.width=32",
    "model.vision.depth=1",
    "model.vision.num_heads=2",
    "model.text.hidden_size=32",
    "model.text.num_layers=2",
    "model.text.fusion_layer=1",
    "model.text.num_heads=2",
    "model.text.intermediate_size=64",
    "model.text.encoder_width=32",
    "model.text.vocab_size=512",
    "model.embed_dim=16",
    "model.queue_size=32",
    "data.batch_size_train=8",
    "data.num_workers=0",
    "runtime.device=cpu",
)
"""``--set`` overrides of ``synthetic_pretrain`` for tests; 48 pretraining images / 8 = 6 steps an epoch."""


def small_world(factory: pytest.TempPathFactory) -> Path:
    """The ``small`` synthetic world (seed 0), generated once per session under pytest's base temp dir."""
    from albef.data.synthetic import ensure_world

    return ensure_world(factory.getbasetemp() / "small-world", "small", 0)


def pretrain_argv(world: Path, output_dir: Path, *extra: str) -> list[str]:
    """``albef pretrain`` arguments for the tiny model on ``world`` (``extra`` are further ``--set``s)."""
    argv = ["pretrain", "--output-dir", str(output_dir), "--no-progress"]
    for override in (
        f"data.root={world}",
        "data.synthetic_size=small",
        *TINY_OVERRIDES,
        *extra,
    ):
        argv += ["--set", override]
    return argv


def assert_identical(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Bitwise equality of nested dicts/lists/tensors."""
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs (max abs diff {(a.double() - b.double()).abs().max()})"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def sigkill_when_ready(proc: subprocess.Popen[bytes], ready: Path, what: str, timeout_s: float = 120) -> None:
    """Wait until the process creates ``ready`` (it reached the point to be killed at), then SIGKILL it; fail
    with its stderr if it ends before, and never leave it running."""
    try:
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"the process ended (rc {proc.returncode}) before {what}:\n{stderr[-3000:]}")
            assert time.monotonic() < deadline, f"the process never reached {what}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
