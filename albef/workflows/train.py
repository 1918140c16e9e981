"""Assemble a training run from a config: device, processes, data, model, trainer.

Used by ``albef pretrain`` (and, through the same :func:`train`, by the finetuning commands). Works the same
in one process and under ``torchrun`` (each rank builds its shard of the data; rank 0 writes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from albef.config.io import ConfigError, save_config, to_dict
from albef.config.schema import ExperimentConfig
from albef.data.loaders import build_loader
from albef.engine import checkpointing as ckpt
from albef.engine.compile import compile_model
from albef.engine.determinism import Determinism, configure_determinism, seed_everything
from albef.engine.distributed import World, barrier, cleanup, init_distributed
from albef.engine.precision import Precision, resolve_device, resolve_precision
from albef.engine.run_folder import RUN_FILE, RunClaim, claim_run_folder
from albef.engine.trainer import Trainer, TrainResult
from albef.errors import CheckpointError
from albef.fileio import atomic_write_json
from albef.reporting.environment import git_revision
from albef.tasks import get_task
from albef.tasks.data import build_tokenizer, ensure_data


@dataclass
class RunContext:
    """Resolved runtime of a run (``claim``: the run folder's lock and identity, on rank 0)."""

    world: World
    precision: Precision
    output_dir: Path
    determinism: Determinism
    claim: RunClaim | None = None


_CLAIMS: list[RunClaim] = []
"""Run folders this process holds, released by :func:`end_run`."""


def setup_run(cfg: ExperimentConfig, resume: str | None = None) -> RunContext:
    """Resolve device/precision, start the process group if launched by torchrun, and claim the output folder
    (rank 0: lock it and check that this run may write there, see :mod:`albef.engine.run_folder`)."""
    device = resolve_device(cfg.runtime.device)
    world = init_distributed(device.type)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    precision = resolve_precision(cfg.runtime.precision, device)
    determinism = configure_determinism(cfg.runtime.deterministic, device)
    output_dir = Path(cfg.runtime.output_dir)
    if resume not in (None, "", "auto") and not Path(resume).is_file():
        raise CheckpointError(f"--resume {resume}: no such checkpoint file")
    claim = None
    if world.is_main:
        config = to_dict(cfg)
        claim = claim_run_folder(
            output_dir,
            config,
            resume,
            checkpoint_config=_newest_checkpoint_config(output_dir) if resume else None,
            revision=git_revision(),
        )
        _CLAIMS.append(claim)
        save_config(cfg, output_dir / "config.yaml")
    return RunContext(world, precision, output_dir, determinism, claim)


def _newest_checkpoint_config(output_dir: Path) -> dict[str, Any] | None:
    """The config stored in the newest readable checkpoint of a folder without ``run.json`` (older runs)."""
    if (output_dir / RUN_FILE).exists():
        return None
    for path in reversed(ckpt.list_checkpoints(output_dir / ckpt.CHECKPOINT_DIR)):
        try:
            return dict(ckpt.load_training_checkpoint(path).get("config") or {}) or None
        except CheckpointError:
            continue
    return None


def end_run() -> None:
    """Release the run folders this process holds and leave the process group (every command's last step)."""
    while _CLAIMS:
        _CLAIMS.pop().lock.release()
    cleanup()


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


INIT_REPORT = "init_report.json"
"""Where a run started from ``model.text.init`` / ``model.vision.init`` records what came from where."""


def _resuming(resume: str | None, output_dir: Path) -> bool:
    """``--resume`` names a file, or ``auto`` finds a checkpoint of the run."""
    if not resume:
        return False
    return resume != "auto" or bool(ckpt.list_checkpoints(output_dir / ckpt.CHECKPOINT_DIR))


def initialise(model: nn.Module, cfg: ExperimentConfig, ctx: RunContext) -> None:
    """The official recipe's starting weights (``model.text.init``, ``model.vision.init``); rank 0 writes
    ``init_report.json`` (which tensors came from where, which got a fresh init and why, resized position
    embeddings) and prints a line per source."""
    from albef.checkpoint.init import initialise_from_config

    reports = initialise_from_config(model, cfg.model.text.init, cfg.model.vision.init)
    if not reports or not ctx.world.is_main:
        return
    sources = {"text": cfg.model.text.init, "vision": cfg.model.vision.init}
    payload = {part: {"source": sources[part], **asdict(report)} for part, report in reports.items()}
    atomic_write_json(ctx.output_dir / INIT_REPORT, payload)
    for part, report in reports.items():
        print(f"{part} init from {sources[part]}: {report.summary()}")


def train(
    cfg: ExperimentConfig,
    *,
    resume: str | None = None,
    checkpoint: str | None = None,
    show_progress: bool = True,
) -> tuple[TrainResult, nn.Module, RunContext]:
    """Train ``cfg.task`` as configured; returns the result, the trained model and the run context."""
    ctx = setup_run(cfg, resume)
    try:
        return _train(cfg, ctx, resume=resume, checkpoint=checkpoint, show_progress=show_progress)
    except BaseException:
        if ctx.claim is not None:  # the caller gets no context to release
            _CLAIMS.remove(ctx.claim)
            ctx.claim.lock.release()
        raise


def _train(
    cfg: ExperimentConfig, ctx: RunContext, *, resume: str | None, checkpoint: str | None, show_progress: bool
) -> tuple[TrainResult, nn.Module, RunContext]:
    prepare_data(cfg, ctx.world)
    tokenizer = build_tokenizer(cfg.data)
    task = get_task(cfg.task)(cfg, tokenizer)
    seed_everything(cfg.runtime.seed)  # identical initial weights on every rank
    model = task.build_model().to(ctx.precision.device)
    if not _resuming(resume, ctx.output_dir):  # a resumed run's checkpoint holds every weight
        initialise(model, cfg, ctx)
    load_initial_weights(model, cfg.task, checkpoint)
    if cfg.runtime.compile:
        compile_model(model, cfg.runtime.compile_mode)
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
        find_unused_parameters=task.unused_parameters,
    )
    result = trainer.fit(resume)
    return result, model, ctx


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write a JSON summary next to the run's metrics."""
    atomic_write_json(path, summary)


def summarise(history: list[dict[str, float]]) -> dict[str, Any]:
    """Mean of each loss over the first and the last tenth of the steps."""
    if not history:
        return {"steps": 0}
    n = max(1, len(history) // 10)
    keys = [k for k in history[0] if k.endswith("_loss") or k == "loss"]
    first = {k: sum(h[k] for h in history[:n]) / n for k in keys}
    last = {k: sum(h[k] for h in history[-n:]) / n for k in keys}
    speed = sum(h["samples_per_s"] for h in history) / len(history)
    return {"steps": int(history[-1]["step"]), "loss_first": first, "loss_last": last, "samples_per_s": speed}
