"""The start of every evaluation, written once: device, process group, determinism, data, the model to evaluate.

``albef evaluate <task>`` (and ``albef reproduce`` through it) resolves the config, then
:func:`prepare_evaluation` and :func:`evaluation_model`, and hands the model to its task's evaluator.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from albef.checkpoint import load_checkpoint
from albef.config.schema import ExperimentConfig
from albef.engine.compile import compile_model
from albef.engine.determinism import configure_determinism
from albef.engine.distributed import World, init_distributed
from albef.engine.precision import Precision, resolve_device, resolve_precision
from albef.models.builders import create_model
from albef.workflows.train import prepare_data, seed_everything


def prepare_evaluation(cfg: ExperimentConfig) -> tuple[World, Precision]:
    """This rank's device and precision, the process group under ``torchrun``, deterministic mode as
    configured, and the synthetic world when the config names one."""
    device = resolve_device(cfg.runtime.device)
    world = init_distributed(device.type)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    configure_determinism(cfg.runtime.deterministic, device)
    precision = resolve_precision(cfg.runtime.precision, device)
    prepare_data(cfg, world)
    return world, precision


def evaluation_model(
    cfg: ExperimentConfig, checkpoint: str | Path, precision: Precision, task: str | None = None
) -> nn.Module:
    """The model of ``task`` (default ``cfg.task``) without the teachers no evaluation uses, ``checkpoint``
    converted and loaded strictly, compiled when ``runtime.compile`` says so, on the device, in eval mode."""
    task = task or cfg.task
    seed_everything(cfg.runtime.seed)
    model = create_model(task, dataclasses.replace(cfg.model, distill=False))
    load_checkpoint(model, task, str(checkpoint))
    if cfg.runtime.compile:
        compile_model(model, cfg.runtime.compile_mode)
    return model.to(precision.device).eval()
