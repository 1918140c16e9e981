"""Assemble a training run from a config: device, processes, data, model, trainer.

Used by ``albef pretrain`` (and, through the same :func:`train`, by the finetuning commands). Works the same
in one process and under ``torchrun`` (each rank builds its shard of the data; rank 0 writes).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from albef.config.io import ConfigError, save_config
from albef.config.schema import ExperimentConfig
from albef.data.loaders import build_loader
from albef.engine.determinism import Determinism, configure_determinism
from albef.engine.distributed import World, barrier, init_distributed
from albef.engine.precision import Precision, resolve_device, resolve_precision
from albef.engine.trainer import Trainer, TrainResult
from albef.tasks import get_task
from albef.tasks.data import build_tokenizer, ensure_data


@dataclass
class RunContext:
    """Resolved runtime of a run."""

    world: World
    precision: Precision
    output_dir: Path
    determinism: Determinism


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def setup_run(cfg: ExperimentConfig) -> RunContext:
    """Resolve device/precision, start the process group if launched by torchrun, create the output dir."""
    device = resolve_device(cfg.runtime.device)
    world = init_distributed(device.type)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    determinism = configure_determinism(cfg.runtime.deterministic, device)
    output_dir = Path(cfg.runtime.output_dir)
    if world.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "config.yaml")
    return RunContext(world, resolve_precision(cfg.runtime.precision, device), output_dir, determinism)


def prepare_data(cfg: ExperimentConfig, world: World) -> None:
    """Generate the synthetic world on rank 0 (others wait), if the config uses it."""
    if world.is_main:
        ensure_data(cfg.data)
    barrier()


def load_initial_weights(model: nn.Module, task: str, checkpoint: str | None) -> dict[str, Any] | None:
    """Load ``--checkpoint`` (official or ours, converted to ``task``) into a fresh model."""
    if checkpoint is None:
        return None
    from albef.checkpoint import load_checkpoint

    report = load_checkpoint(model, task, checkpoint)
    return report.as_dict() if hasattr(report, "as_dict") else {"report": str(report)}


def train(
    cfg: ExperimentConfig,
    *,
    resume: str | None = None,
    checkpoint: str | None = None,
    show_progress: bool = True,
) -> tuple[TrainResult, nn.Module, RunContext]:
    """Train ``cfg.task`` as configured; returns the result, the trained model and the run context."""
    ctx = setup_run(cfg)
    prepare_data(cfg, ctx.world)
    tokenizer = build_tokenizer(cfg.data)
    task = get_task(cfg.task)(cfg, tokenizer)
    seed_everything(cfg.runtime.seed)  # identical initial weights on every rank
    model = task.build_model().to(ctx.precision.device)
    load_initial_weights(model, cfg.task, checkpoint)
    try:
        task.check_model(model, cfg.data.batch_size_train * ctx.world.world_size)
    except ValueError as err:  # a config mistake: one line from the CLI (exit 2), before any step
        raise ConfigError(f"{err}; change model.queue_size or data.batch_size_train") from err
    loader = build_loader(
        task.train_dataset(),
        cfg.data.batch_size_train,
        task.collator(),
        train=True,
        num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory,
        persistent_workers=cfg.data.persistent_workers,
        seed=cfg.runtime.seed,
        rank=ctx.world.rank,
        world_size=ctx.world.world_size,
    )
    seed_everything(cfg.runtime.seed + ctx.world.rank)  # per-rank randomness, as the official seed + rank
    trainer = Trainer(
        cfg,
        model,
        task.objective(),
        loader,
        ctx.precision,
        ctx.world,
        ctx.output_dir,
        show_progress,
        evaluate=task.epoch_evaluator(),
        select=task.select_metric(),
    )
    result = trainer.fit(resume)
    return result, model, ctx


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write a JSON summary next to the run's metrics."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
