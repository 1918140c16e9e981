"""The finetuning workflow, once for every task: train, reload the best epoch, report, evaluate the test split.

:func:`finetune_task` is ``albef finetune <task>`` (and ``albef pretrain-ta``, without a test split):

1. the task's starting weights (:meth:`~albef.tasks.Task.initial_weights`; NLVR²'s ``--parity-teacher``
   prepares a copy);
2. :func:`finetune`: :func:`~albef.workflows.train.train` on the config, then ``best.pt`` reloaded into the
   model (one way, for every task) when validation kept one, then the ``kind="training"`` run report
   (``<output>/<task>_train_report.json``, its Markdown, CSV and plots) on rank 0;
3. ``summary.json``: the loss over the first and last tenth of the steps, the validations, the best epoch;
4. the test split evaluated with the best epoch's weights through
   :func:`~albef.workflows.evaluate.evaluate_split`, the same step ``albef evaluate <task>`` runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from albef.checkpoint.io import torch_load_safe
from albef.config.schema import ExperimentConfig
from albef.engine.metrics_log import read_metrics
from albef.engine.trainer import TrainResult
from albef.errors import CheckpointError
from albef.reporting.console import training_lines
from albef.reporting.environment import utc_now_iso
from albef.reporting.schema import RunReport
from albef.workflows.evaluate import build_task, evaluate_split
from albef.workflows.reports import training_report, write_report
from albef.workflows.train import RunContext, end_run, summarise, train, write_summary


@dataclass
class Finetuned:
    """What :func:`finetune` leaves: the trained model (best epoch loaded), where its weights are, the report.

    Attributes:
        result: The trainer's result.
        model: The model, holding the best validation epoch's weights when one was kept.
        context: The run's device, precision and process group.
        weights: ``best.pt`` when validation kept one, else the last checkpoint.
        report: The training report (rank 0; ``None`` elsewhere).
        test: The test split's evaluation report (rank 0, when the test split was evaluated).
    """

    result: TrainResult
    model: nn.Module
    context: RunContext
    weights: Path | None
    report: RunReport | None
    test: RunReport | None = None


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
    dataset: str,
) -> Finetuned:
    """Train ``cfg.task``, reload its best epoch, write ``<task>_train_report.json`` (rank 0).

    Args:
        cfg: The task's config.
        checkpoint: The ``--checkpoint`` named in the report.
        resume: ``--resume`` (``auto`` or a path).
        show_progress: Progress bars on rank 0.
        initial: The weights actually loaded at the start, when they differ from ``checkpoint``.
        dataset: The dataset the report names (the task's ``dataset_name()``).
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
        report = training_report(cfg, result, ctx.precision, checkpoint, start, wall, dataset)
        write_report(report, Path(cfg.runtime.output_dir), f"{cfg.task}_train_report")
    return Finetuned(result, model, ctx, result.best_checkpoint or result.checkpoint, report)


def run_summary(out: Path, result: TrainResult) -> dict[str, Any]:
    """``summary.json`` of a finetuning run: the whole log's losses (a resumed run included), the
    validations, the best epoch and its checkpoint."""
    steps = [r for r in read_metrics(out / "metrics.jsonl") if "step_time" in r]  # not the val/ records
    summary = summarise(steps)
    summary.update(validation=result.validation, best_epoch=result.state.best_epoch)
    summary["best_checkpoint"] = str(result.best_checkpoint) if result.best_checkpoint else None
    summary["checkpoint"] = str(result.checkpoint) if result.checkpoint else None
    summary["skipped_images"] = result.skipped_images
    return summary


def finetune_task(
    cfg: ExperimentConfig,
    *,
    checkpoint: str | None = None,
    resume: str | None = None,
    show_progress: bool = True,
    test: bool = True,
    options: dict[str, Any] | None = None,
) -> Finetuned:
    """``albef finetune <task>``: finetune, write the training report and ``summary.json``, then evaluate the
    test split (``data.test_file``, unless ``test`` is off) with the best epoch's weights.

    Args:
        cfg: The task's config.
        checkpoint: The starting weights (official or ours; converted).
        resume: ``auto`` or a checkpoint of this run.
        show_progress: Progress bars on rank 0.
        test: Evaluate the test split at the end.
        options: The task's own options by name (:attr:`~albef.tasks.Task.finetune_options`).
    """
    options = dict(options or {})
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CheckpointError(f"--checkpoint {checkpoint}: no such checkpoint file")
    task = build_task(cfg)
    out = Path(cfg.runtime.output_dir)
    try:
        initial = task.initial_weights(checkpoint, out, **options)
        done = finetune(
            cfg,
            checkpoint=checkpoint,
            resume=resume,
            show_progress=show_progress,
            initial=initial,
            dataset=task.dataset_name(),
        )
        is_main = done.context.world.is_main
        summary = run_summary(out, done.result) if is_main else {}
        if done.report is not None:
            print("\n".join(training_lines(done.report)))
        if test and cfg.data.test_file and task.selection is not None:
            done.test = evaluate_split(
                task,
                done.model,
                done.context.precision,
                "test",
                task.reports_dir(out),
                checkpoint=done.weights,
                options=options,
                is_main=is_main,
            )
        if is_main:
            if done.test is not None:
                summary["test"] = {name: m.value for name, m in done.test.metrics.items()}
                summary["test_report"] = str(task.reports_dir(out) / f"{task.report_stem('test')}.json")
            write_summary(out / "summary.json", summary)
    finally:
        end_run()
    return done
