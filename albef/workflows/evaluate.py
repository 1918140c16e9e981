"""Every evaluation, written once against the task interface: set up, build the model, evaluate, write, print.

``albef evaluate <task>`` and ``albef reproduce`` call :func:`run_evaluation`; a finetuning run calls
:func:`evaluate_split` on its test split with the model it has just trained. The steps:

1. :func:`prepare_evaluation`: device, process group, deterministic mode, the synthetic world when named;
2. :func:`evaluation_model`: the task's model without teachers, the checkpoint converted and loaded strictly;
3. :func:`evaluate_split`: the task's evaluator of the split runs the model (every rank); rank 0 then writes
   the task's own files (:meth:`~albef.tasks.Task.write_outputs`), the run report ``<stem>.json`` with its
   ``<stem>.md`` and the rendered tables and plots, and prints the metrics.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from albef.checkpoint import load_checkpoint
from albef.config.schema import ExperimentConfig
from albef.engine.compile import compile_model
from albef.engine.determinism import configure_determinism, seed_everything
from albef.engine.distributed import World, init_distributed
from albef.engine.precision import Precision, resolve_device, resolve_precision
from albef.errors import CheckpointError, ConfigError, RunFolderError
from albef.fileio import atomic_write_text
from albef.models.builders import create_model
from albef.reporting.console import evaluation_lines
from albef.reporting.environment import utc_now_iso
from albef.reporting.schema import RunReport
from albef.tasks import Task, get_task
from albef.tasks.data import build_tokenizer
from albef.workflows.reports import checkpoint_info, report_fields, write_report
from albef.workflows.train import prepare_data

PARTIAL_DIR = ".partial"
"""Folder of the report directory where an evaluation keeps the partial results ``--resume`` continues from."""


def build_task(cfg: ExperimentConfig, task: str | None = None) -> Task:
    """The task object of ``cfg`` (or the named ``task``, which ``cfg`` must be a config of)."""
    if task is not None and cfg.task != task:
        raise ConfigError(f"config {cfg.name!r} is for task '{cfg.task}', not {task}")
    return get_task(cfg.task)(cfg, build_tokenizer(cfg.data))


def refuse_overwrite(paths: Iterable[str | Path], overwrite: bool) -> None:
    """Stop, before any work, when an output file exists and ``overwrite`` is off.

    Raises:
        RunFolderError: The first existing file, and the ways out.
    """
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise RunFolderError(
                f"{path} exists (an earlier evaluation); pass --overwrite to replace it, or write elsewhere "
                "(--out / --output-dir)"
            )


def report_files(
    task: Task, split: str, out: Path, options: dict[str, Any], log_samples: bool = False
) -> list[Path]:
    """Everything an evaluation of ``split`` writes into ``out``: the report, its Markdown, the task's files and,
    with ``log_samples``, the per-sample log."""
    stem = task.report_stem(split)
    files = [out / f"{stem}.json", out / f"{stem}.md", *task.output_files(split, out, **options)]
    return files + ([samples_file(task, split, out)] if log_samples else [])


def samples_file(task: Task, split: str, out: Path) -> Path:
    """Where ``--log-samples`` writes: ``<report stem>-samples.jsonl`` (``ve_dev-samples.jsonl`` beside
    ``ve_dev_report.json``)."""
    return out / f"{task.report_stem(split).removesuffix('_report')}-samples.jsonl"


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


def evaluate_split(
    task: Task,
    model: nn.Module,
    precision: Precision,
    split: str,
    out: Path,
    *,
    checkpoint: str | Path | None = None,
    options: dict[str, Any] | None = None,
    is_main: bool = True,
    log_samples: bool = False,
) -> RunReport | None:
    """Evaluate ``model`` on ``split`` with the task's evaluator; on rank 0 write and print (returns the report).

    Args:
        task: The task (its config names the split's files).
        model: The model, on its device.
        precision: The evaluation's precision.
        split: A split name of :attr:`Task.splits`.
        out: Where the report and the task's files go.
        checkpoint: The file the weights came from (named and hashed in the report; the retrieval cache key).
        options: The task's own options by name.
        is_main: Rank 0 (the only rank that writes).
        log_samples: Also write every item's record (:meth:`Task.sample_records`) as ``<stem>-samples.jsonl``.
    """
    options = dict(options or {})
    start, tic = utc_now_iso(), time.perf_counter()
    work_dir = out / PARTIAL_DIR / task.report_stem(split)  # partial results of a long step, for --resume
    evaluator = task.evaluator(split, precision, checkpoint=checkpoint, work_dir=work_dir, **options)
    result = evaluator.run(model)
    wall = time.perf_counter() - tic
    if not is_main:
        return None
    out.mkdir(parents=True, exist_ok=True)
    task.write_outputs(result, split, out, **options)
    if log_samples:
        lines = "".join(json.dumps(record) + "\n" for record in task.sample_records(result, split))
        result.extra["samples_file"] = str(atomic_write_text(samples_file(task, split, out), lines))
    result.extra.setdefault("examples_per_s", result.n_samples / wall if wall > 0 else 0.0)
    fields = report_fields(task.cfg, precision, start, wall, dataset=task.dataset_name())
    report = result.to_report(split=split, checkpoint=checkpoint_info(checkpoint), **fields)
    path = write_report(report, out, task.report_stem(split))
    print("\n".join(evaluation_lines(report)))
    print(f"report: {path}")
    return report


def run_evaluation(
    cfg: ExperimentConfig,
    checkpoint: str | Path,
    split: str,
    *,
    out: Path | None = None,
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
    task: str | None = None,
    log_samples: bool = False,
) -> RunReport | None:
    """``albef evaluate <task>``: evaluate ``checkpoint`` on ``split`` of ``cfg``'s task.

    Args:
        cfg: The config (of ``task`` when one is named).
        checkpoint: Official or our weights.
        split: The split to evaluate.
        out: The report folder (default: the task's :meth:`~albef.tasks.Task.evaluation_dir`).
        options: The task's own options by name.
        overwrite: Replace the files of an earlier evaluation (otherwise refused before any work).
        task: The task the command was called for.
        log_samples: Also write the per-sample log (``<stem>-samples.jsonl``).

    Returns:
        The run report on rank 0, ``None`` elsewhere.
    """
    options = dict(options or {})
    if not Path(checkpoint).is_file():
        raise CheckpointError(f"--checkpoint {checkpoint}: no such checkpoint file")
    if task is not None and cfg.task != task:
        raise ConfigError(f"config {cfg.name!r} is for task '{cfg.task}', not {task}")
    world, precision = prepare_evaluation(cfg)  # a synthetic world is generated before its tokenizer is read
    chosen = build_task(cfg, task)
    if split not in chosen.splits:
        raise ConfigError(f"task {cfg.task!r} has no split {split!r}; valid: {', '.join(chosen.splits)}")
    out = out or chosen.evaluation_dir()
    if log_samples and type(chosen).sample_records is Task.sample_records:
        raise ConfigError(f"task {cfg.task!r} keeps no per-sample records (--log-samples)")
    refuse_overwrite(report_files(chosen, split, out, options, log_samples), overwrite)
    model = evaluation_model(cfg, checkpoint, precision)
    return evaluate_split(
        chosen, model, precision, split, out, checkpoint=checkpoint, options=options, is_main=world.is_main,
        log_samples=log_samples,
    )  # fmt: skip
