"""Tests of ``albef.engine``: optimizer and schedules, checkpoints, the trainer loop, distributed helpers.

The training tests run ``albef pretrain`` on the ``small`` synthetic world with a model shrunk to a few
thousand parameters (:data:`TINY_OVERRIDES`), so a step takes tens of milliseconds on one CPU thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
