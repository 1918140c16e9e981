"""The finetuning workflow, once for every task: train, reload the best epoch, write the training report.

:func:`finetune` is what ``albef finetune <task>`` and ``albef pretrain-ta`` run before their task's test-split
evaluation: :func:`~albef.workflows.train.train` on the config, then ``best.pt`` reloaded into the model (one
way, for every task) when validation kept one, then the ``kind="training"`` run report
(``<output>/<task>_train_report.json`` with its Markdown, CSV and plots) on rank 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from albef.checkpoint.io import torch_load_safe
from albef.config.schema import ExperimentConfig
from albef.engine.trainer import TrainResult
from albef.reporting.environment import utc_now_iso
from albef.reporting.schema import RunReport
from albef.workflows.reports import save_report, training_report
from albef.workflows.train import RunContext, train


@dataclass
class Finetuned:
    """What :func:`finetune` leaves: the trained model (best epoch loaded), where its weights are, the report.

    Attributes:
        result: The trainer's result.
        model: The model, holding the best validation epoch's weights when one was kept.
        context: The run's device, precision and process group.
        weights: ``best.pt`` when validation kept one, else the last checkpoint.
        report: The training report (rank 0; ``None`` elsewhere).
    """

    result: TrainResult
    model: nn.Module
    context: RunContext
    weights: Path | None
    report: RunReport | None


def load_best(model: nn.Module, path: str | Path) -> None:
    """Load ``best.pt`` (the weights of the best validation epoch, this task's own layout) strictly."""
    model.load_state_dict(torch_load_safe(path)["model"])


def finetune(
    cfg: ExperimentConfig,
    *,
    checkpoint: str | None = None,
    resume: str | None = None,
    show_progress: bool = True,
    initial: str | None = None,
) -> Finetuned:
    """Train ``cfg.task``, reload its best epoch, write ``<task>_train_report.json`` (rank 0).

    Args:
        cfg: The task's config.
        checkpoint: The ``--checkpoint`` named in the report.
        resume: ``--resume`` (``auto`` or a path).
        show_progress: Progress bars on rank 0.
        initial: The weights actually loaded at the start, when they differ from ``checkpoint`` (NLVR²'s
            ``--parity-teacher`` prepares a copy).
    """
    start, tic = utc_now_iso(), time.perf_counter()
    result, model, ctx = train(
        cfg, resume=resume, checkpoint=initial or checkpoint, show_progress=show_progress
    )
    wall = time.perf_counter() - tic
    if result.best_checkpoint is not None:
        load_best(model, result.best_checkpoint)
    report = None
    if ctx.world.is_main:
        report = training_report(cfg, result, ctx.precision, checkpoint, start, wall)
        save_report(report, Path(cfg.runtime.output_dir), f"{cfg.task}_train_report.json")
    return Finetuned(result, model, ctx, result.best_checkpoint or result.checkpoint, report)
