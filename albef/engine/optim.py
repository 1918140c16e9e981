"""AdamW with the official parameter groups, and the learning-rate schedules.

Parameter groups (spec §6.2): no weight decay for 1-D tensors and names ending in ``.bias``; frozen
parameters (the EMA teachers) are left out. ``temp`` is 0-dimensional, so it *is* decayed, as officially.

Schedules, as a multiplier-free ``lr(step)`` function:

* ``cosine`` (default): linear warm-up from ``warmup_lr`` to ``lr`` over ``warmup_steps`` optimizer steps,
  then cosine decay to ``min_lr`` at the last step.
* ``staircase`` (parity): the official epoch-based schedule. In epoch 0 the lr steps every 100 iterations,
  ``warmup_lr + t * (lr - warmup_lr) / warmup_epochs`` for ``t = i // 100`` up to ``warmup_epochs``; from
  epoch ``e >= 1`` it is ``min_lr + (lr - min_lr) * (1 + cos(pi * e / epochs)) / 2`` for the whole epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from albef.config.schema import OptimConfig
from albef.errors import ConfigError

STAIRCASE_STEP = 100
"""Iterations per warm-up step of the official schedule (``scheduler.step(i // 100)``)."""


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two AdamW groups: decayed weights, and undecayed 1-D tensors / biases; frozen tensors excluded."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if param.ndim == 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` with the config's lr, betas and eps."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def cosine_lr(cfg: OptimConfig, total_steps: int) -> Callable[[int, int, int], float]:
    """Per-step warm-up + cosine: ``lr(step, epoch, iter_in_epoch)``."""

    def lr_at(step: int, epoch: int, it: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / max(1, cfg.warmup_steps)
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))

    return lr_at


def staircase_lr(cfg: OptimConfig) -> Callable[[int, int, int], float]:
    """The official schedule (see the module docstring): ``lr(step, epoch, iter_in_epoch)``."""

    def lr_at(step: int, epoch: int, it: int) -> float:
        if epoch == 0:
            t = min(it // STAIRCASE_STEP, cfg.warmup_epochs)
            if t < cfg.warmup_epochs:
                return cfg.warmup_lr + t * (cfg.lr - cfg.warmup_lr) / max(1, cfg.warmup_epochs)
            return cfg.lr
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * epoch / cfg.epochs))

    return lr_at


def build_schedule(cfg: OptimConfig, total_steps: int) -> Callable[[int, int, int], float]:
    """The schedule named by ``cfg.schedule``."""
    return staircase_lr(cfg) if cfg.schedule == "staircase" else cosine_lr(cfg, total_steps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def alpha_at(alpha: float, warmup: bool, epoch: int, it: int, iters_per_epoch: int) -> float:
    """Distillation weight: ramps linearly over epoch 0 when ``warmup`` (official ``warm_up``)."""
    if warmup and epoch == 0:
        return alpha * min(1.0, it / max(1, iters_per_epoch))
    return alpha


def weighted_loss(losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """Sum of ``losses`` (keys ``<name>_loss``), each times ``weights[<name>]`` (1 when not named).

    Raises:
        ConfigError: a weight names no loss of the task (``optim.loss_weights``).
    """
    by_name = {key.removesuffix("_loss"): value for key, value in losses.items()}
    unknown = sorted(set(weights) - set(by_name))
    if unknown:
        raise ConfigError(
            f"optim.loss_weights: no loss named {', '.join(unknown)}; "
            f"this task's losses: {', '.join(sorted(by_name))}"
        )
    named = (value * weights[name] if name in weights else value for name, value in by_name.items())
    total: Tensor = sum(named)  # type: ignore[assignment]
    return total
