"""The one training loop for every task.

A *task objective* maps ``(model, batch, alpha) -> {name: tensor}``: entries ending in ``_loss`` are summed
into the loss to minimise, the rest are logged. :class:`Trainer` does everything else: precision (autocast,
GradScaler), gradient accumulation and clipping, the lr schedule and the alpha ramp, DDP, progress bar,
JSON-lines metrics, NaN/inf detection, atomic checkpoints every N steps and at epoch end, and exact resume
from the middle of an epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from albef.config.io import to_dict
from albef.config.schema import ExperimentConfig
from albef.data.images import SkippedImages
from albef.data.loaders import set_epoch
from albef.engine import checkpointing as ckpt
from albef.engine.determinism import naming_nondeterministic_ops
from albef.engine.display import StepDisplay
from albef.engine.distributed import World, all_gather_object
from albef.engine.metrics_log import MetricsLog, metric_sinks, step_record, step_timing
from albef.engine.optim import alpha_at, build_optimizer, build_schedule, set_lr, weighted_loss
from albef.engine.precision import Precision, synchronize
from albef.engine.stopping import StopSignals
from albef.errors import NonFiniteLossError, RunInterrupted
from albef.fileio import atomic_torch_save
from albef.reporting.environment import git_revision
from albef.version import __version__

Objective = Callable[[nn.Module, Any, float], dict[str, Tensor]]

EpochEvaluator = Callable[[nn.Module, int], dict[str, float]]
"""``(model, epoch) -> metrics`` after each epoch (every rank calls it; rank 0's values are used)."""

BEST_CHECKPOINT = "best.pt"


class TrainingModule(nn.Module):
    """Model + objective as one module, so that DDP sees the whole training step as ``forward``."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Any, alpha: float) -> dict[str, Tensor]:
        """The objective's outputs for one batch."""
        return self.objective(self.model, batch, alpha)


@dataclass
class TrainState:
    """Where training stands: epoch, batches consumed in it, optimizer steps taken."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    state: TrainState
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    skipped_images: int = 0
    skipped_files: list[str] = field(default_factory=list)
    """The distinct image files skipped under ``data.bad_images: skip`` (every rank's)."""
    validation: list[dict[str, float]] = field(default_factory=list)
    best_checkpoint: Path | None = None


class Trainer:
    """Trains ``model`` with ``objective`` on ``loader`` as ``cfg`` says.

    Args:
        cfg: The experiment config (optim, runtime and model.alpha/alpha_warmup are used).
        model: The task model, already on ``precision.device``.
        objective: The task objective (see module docstring).
        loader: Training loader built with ``albef.data.loaders.build_loader`` (resumable sampler).
        precision: From ``albef.engine.precision.resolve_precision``.
        world: The distributed world (single process by default).
        output_dir: Where ``checkpoints/`` and ``metrics.jsonl`` go.
        show_progress: Draw a progress bar on rank 0.
        evaluate: Validation after each epoch (model in eval mode, no grad); its metrics are logged to
            ``metrics.jsonl`` with a ``val/`` prefix.
        select: The metric of ``evaluate`` (higher is better) whose best epoch is kept as
            ``best.pt`` (model weights only) next to ``checkpoints/``.
        find_unused_parameters: DDP looks for parameters without a gradient each step (only the tasks that
            have such parameters need it; :attr:`albef.tasks.Task.unused_parameters`).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        model: nn.Module,
        objective: Objective,
        loader: DataLoader[Any],
        precision: Precision,
        world: World | None = None,
        output_dir: str | Path | None = None,
        show_progress: bool = True,
        evaluate: EpochEvaluator | None = None,
        select: str | None = None,
        find_unused_parameters: bool = False,
    ) -> None:
        self.cfg = cfg
        self.evaluate = evaluate
        self.select = select
        self.model = model
        self.loader = loader
        self.precision = precision
        self.world = world or World()
        self.output_dir = Path(output_dir or cfg.runtime.output_dir)
        self.show_progress = show_progress and self.world.is_main
        self.module: nn.Module = TrainingModule(model, objective)
        if self.world.distributed:
            device_ids = [precision.device.index] if precision.device.type == "cuda" else None
            self.module = nn.parallel.DistributedDataParallel(
                self.module,
                device_ids=device_ids,
                broadcast_buffers=False,
                find_unused_parameters=find_unused_parameters,
            )
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scaler = precision.grad_scaler()
        self.iters_per_epoch = len(loader)
        self.steps_per_epoch = max(1, self.iters_per_epoch // cfg.optim.accum_steps)
        self.total_steps = self.steps_per_epoch * cfg.optim.epochs
        if cfg.optim.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.optim.max_steps)
        self.lr_at = build_schedule(cfg.optim, self.total_steps)
        self.state = TrainState()
        self.skipped = SkippedImages()
        self.sync = synchronize(precision.device)
        self.stop = StopSignals(announce=self.world.is_main)
        log_every = cfg.runtime.log_every if self.world.is_main else 0
        self.display = StepDisplay(self.show_progress, log_every, self.total_steps)
        self._last_checkpoint: Path | None = None
        self._saved_step: int | None = None

    # -- checkpoints ---------------------------------------------------------------------------------------
    def checkpoint_payload(self, rng_per_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything an exact resume needs (``rng_per_rank``: every rank's RNG states, when distributed)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "state": dataclasses.asdict(self.state),
            "rng": ckpt.rng_state(),
            "rng_per_rank": rng_per_rank,
            "world_size": self.world.world_size,
            "config": to_dict(self.cfg),
            "git": git_revision(),
            "albef_version": __version__,
        }

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint (rank 0) and prune old ones; returns its path. Every rank must call it."""
        # Each rank draws its own masks and negatives: keep every rank's RNG state, not only rank 0's.
        rng_per_rank = all_gather_object(ckpt.rng_state()) if self.world.distributed else None
        self._saved_step = self.state.global_step  # on every rank: whether a step is saved is collective
        if not self.world.is_main:
            return None
        directory = self.output_dir / ckpt.CHECKPOINT_DIR
        path = atomic_torch_save(
            self.checkpoint_payload(rng_per_rank), directory / ckpt.checkpoint_name(self.state.global_step)
        )
        ckpt.prune_checkpoints(directory, self.cfg.runtime.keep_last, self.state.global_step)
        self._last_checkpoint = path
        return path

    def resume(self, path: str | Path, payload: dict[str, Any] | None = None) -> None:
        """Restore model, optimizer, scaler, position and RNG states from a checkpoint (``payload``: its
        already-read content)."""
        if payload is None:
            payload = ckpt.load_training_checkpoint(path)
        ckpt.check_fits(Path(path), payload, self.model, self.cfg.task)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload.get("scaler") is not None:
            self.scaler.load_state_dict(payload["scaler"])
        self.state = TrainState(**{**dataclasses.asdict(TrainState()), **payload["state"]})
        per_rank = payload.get("rng_per_rank") or [payload["rng"]]
        saved_world = int(payload.get("world_size", len(per_rank)))
        if saved_world != self.world.world_size:
            note = ckpt.check_world_size(
                Path(path), self.state.epoch, self.state.batch_in_epoch, saved_world, self.world.world_size
            )
            if self.world.is_main:
                print(
                    f"{note}: the global batch is now {self.cfg.data.batch_size_train * self.world.world_size}",
                    file=sys.stderr,
                )
        same_world = len(per_rank) == self.world.world_size
        ckpt.set_rng_state(per_rank[self.world.rank] if same_world else payload["rng"])

    def _stop_now(self, signum: int) -> None:
        """Checkpoint the step just finished (unless it already is) and raise :class:`RunInterrupted`."""
        name = ckpt.checkpoint_name(self.state.global_step)
        path = self._last_checkpoint
        if self._saved_step != self.state.global_step:  # the same answer on every rank (a collective follows)
            path = self.save_checkpoint()
        raise RunInterrupted(
            f"stopped by {signal.Signals(signum).name} after step {self.state.global_step}; checkpoint "
            f"{path or self.output_dir / ckpt.CHECKPOINT_DIR / name}; continue with --resume auto",
            signum,
        )

    # -- the loop ------------------------------------------------------------------------------------------
    def _batches(self) -> Iterator[Any]:
        start = self.state.batch_in_epoch
        set_epoch(self.loader, self.state.epoch, start_batch=start)
        yield from self.loader

    def _forward_backward(self, batch: Any, alpha: float, sync_grads: bool) -> dict[str, Tensor]:
        batch = batch.to(self.precision.device, non_blocking=True)
        no_sync = getattr(self.module, "no_sync", None)
        context = no_sync() if (no_sync is not None and not sync_grads) else contextlib.nullcontext()
        with context:
            with self.precision.autocast():
                outputs = self.module(batch, alpha)
            losses = {k: v for k, v in outputs.items() if k.endswith("_loss")}
            for name, value in losses.items():
                if not torch.isfinite(value).all():
                    last = (
                        f"the last good checkpoint, {self._last_checkpoint}, is left intact"
                        if self._last_checkpoint is not None
                        else "no checkpoint was written before it"
                    )
                    raise NonFiniteLossError(
                        f"step {self.state.global_step + 1} (epoch {self.state.epoch}, batch "
                        f"{self.state.batch_in_epoch}): {name} is {value.item()}; {last}"
                    )
            total = weighted_loss(losses, self.cfg.optim.loss_weights) / self.cfg.optim.accum_steps
            if self.scaler is not None:
                self.scaler.scale(total).backward()
            else:
                total.backward()
        return outputs

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.clip_grad_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _done(self) -> bool:
        return self.state.global_step >= self.total_steps

    def fit(self, resume: str | None = None) -> TrainResult:
        """Train until ``optim.epochs`` (or ``optim.max_steps``); resume from ``auto`` or a path if given."""
        found = ckpt.resolve_resume(resume, self.output_dir)
        path: Path | None = None
        if found is not None:
            path, payload = found
            self.resume(path, payload)
            self._last_checkpoint = path
            if self.world.is_main:
                ckpt.set_aside_later_checkpoints(
                    path, self.output_dir / ckpt.CHECKPOINT_DIR, self.state.global_step
                )
        with self.stop.listening():
            return self._fit(path)

    def _fit(self, path: Path | None) -> TrainResult:
        result = TrainResult(self.state)
        self.model.train()
        last_checkpoint: Path | None = path
        metrics = self.output_dir / "metrics.jsonl"
        sinks = metric_sinks(self.cfg, self.output_dir, self.state.global_step) if self.world.is_main else []
        with MetricsLog(metrics, self.world.is_main, self.state.global_step, sinks) as log:
            while not self._done() and self.state.epoch < self.cfg.optim.epochs:
                epoch = self.state.epoch
                saved = self._run_epoch(log, result, validate=self.evaluate is not None)
                last_checkpoint = saved or last_checkpoint
                if self.evaluate is not None and self.state.epoch > epoch:
                    self._validate(epoch, log, result)
                    last_checkpoint = self.save_checkpoint() or last_checkpoint
        best = self.output_dir / BEST_CHECKPOINT
        result.best_checkpoint = best if self.state.best_epoch is not None and best.exists() else None
        if self.world.distributed:  # each rank loaded its own shard: report every rank's skips
            every = SkippedImages()
            for items in all_gather_object(list(self.skipped)):
                every.extend(items)
            self.skipped = every
        result.state, result.checkpoint = self.state, last_checkpoint
        result.skipped_images = len(self.skipped)
        result.skipped_files = sorted({item.path for item in self.skipped})
        if len(self.skipped) and self.world.is_main:
            print(self.skipped.summary(), file=sys.stderr)
        return result

    def _validate(self, epoch: int, log: MetricsLog, result: TrainResult) -> None:
        """Run ``evaluate`` after ``epoch``; keep ``best.pt`` when ``select`` improved."""
        assert self.evaluate is not None
        self.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in self.evaluate(self.model, epoch).items()}
        self.model.train()
        record = {"step": float(self.state.global_step), "epoch": float(epoch)}
        record.update({f"val/{k}": v for k, v in metrics.items()})
        result.validation.append(record)
        log.write(record)
        if self.select is None:
            return
        if self.select not in metrics:
            raise KeyError(f"validation gave no {self.select!r}; it gave {', '.join(sorted(metrics))}")
        value = metrics[self.select]
        if self.state.best_value is None or value > self.state.best_value:
            self.state.best_value, self.state.best_epoch = value, epoch
            if self.world.is_main:
                ckpt.save_best(
                    self.output_dir / BEST_CHECKPOINT, self.model, epoch, self.select, value, self.cfg
                )

    def _run_epoch(self, log: MetricsLog, result: TrainResult, validate: bool = False) -> Path | None:
        accum = self.cfg.optim.accum_steps
        remaining = min(self.steps_per_epoch, self.total_steps - self.state.global_step)
        self.display.start_epoch(self.state.epoch, remaining, self.state.batch_in_epoch // accum)
        saved: Path | None = None
        # A step's time runs from the end of the previous step over every micro-batch of its accumulation
        # group, waits for data included; data_time sums those waits.
        group_start = tic = time.perf_counter()
        data_time = 0.0
        # A trailing micro-batch that cannot complete an accumulation group is skipped (like drop_last), so
        # its gradient never leaks into the next epoch's first step.
        usable = self.iters_per_epoch - self.iters_per_epoch % accum
        for batch in self._batches():
            data_time += time.perf_counter() - tic
            it = self.state.batch_in_epoch
            if it >= usable:
                break
            alpha = alpha_at(
                self.cfg.model.alpha, self.cfg.model.alpha_warmup, self.state.epoch, it, self.iters_per_epoch
            )
            lr = self.lr_at(self.state.global_step, self.state.epoch, it)
            set_lr(self.optimizer, lr)
            self.skipped.extend(batch.skipped)
            step_now = (it + 1) % accum == 0
            with naming_nondeterministic_ops():
                outputs = self._forward_backward(batch, alpha, sync_grads=step_now)
            self.state.batch_in_epoch += 1
            if not step_now:
                tic = time.perf_counter()
                continue
            with naming_nondeterministic_ops():
                self._optimizer_step()
            self.sync()
            self.state.global_step += 1
            items = len(batch) * self.cfg.optim.accum_steps * self.world.world_size
            record = step_record(self.state.global_step, self.state.epoch, outputs, lr, alpha, items)
            step_time = time.perf_counter() - group_start
            record.update(step_timing(items, data_time, step_time, self.precision.device))
            result.history.append(record)
            log.write(record)
            self.display.step(record)
            every = self.cfg.runtime.checkpoint_every
            if every and self.state.global_step % every == 0 and not self._done():
                saved = self.save_checkpoint() or saved
            signum = self.stop.requested(self.world, self.precision.device)
            if signum is not None:
                if self.state.batch_in_epoch >= usable:  # the epoch's last step: resume starts the next
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
                self._stop_now(signum)
            if self._done():
                break
            group_start = tic = time.perf_counter()
            data_time = 0.0
        self.display.end_epoch()
        if self.state.batch_in_epoch >= usable:
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            if validate:  # the checkpoint follows the validation, so it records the best epoch
                return saved
        return self.save_checkpoint() or saved
