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
import shutil
import signal
import sys
import threading
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
from albef.engine.determinism import NondeterministicOpError, explain_nondeterministic_op
from albef.engine.distributed import World, all_gather_object
from albef.engine.metrics_log import MetricsLog
from albef.engine.optim import alpha_at, build_optimizer, build_schedule, set_lr
from albef.engine.precision import Precision, synchronize
from albef.errors import CheckpointError, NonFiniteLossError, RunInterrupted
from albef.fileio import atomic_torch_save
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


@contextlib.contextmanager
def _naming_nondeterministic_ops() -> Iterator[None]:
    """Turn torch's error for an op without a deterministic kernel into a one-line config error."""
    try:
        yield
    except RuntimeError as err:
        message = explain_nondeterministic_op(err)
        if message is None:
            raise
        raise NondeterministicOpError(message) from err


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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
                self.module, device_ids=device_ids, broadcast_buffers=False, find_unused_parameters=True
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
        self._stop_signal: int | None = None
        self._last_checkpoint: Path | None = None

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
            "config": to_dict(self.cfg),
            "git": ckpt.git_revision(),
            "albef_version": __version__,
        }

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint (rank 0) and prune old ones; returns its path. Every rank must call it."""
        # Each rank draws its own masks and negatives: keep every rank's RNG state, not only rank 0's.
        rng_per_rank = all_gather_object(ckpt.rng_state()) if self.world.distributed else None
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
        self._check_fits(Path(path), payload)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload.get("scaler") is not None:
            self.scaler.load_state_dict(payload["scaler"])
        self.state = TrainState(**{**dataclasses.asdict(TrainState()), **payload["state"]})
        per_rank = payload.get("rng_per_rank") or [payload["rng"]]
        same_world = len(per_rank) == self.world.world_size
        ckpt.set_rng_state(per_rank[self.world.rank] if same_world else payload["rng"])

    def _check_fits(self, path: Path, payload: dict[str, Any]) -> None:
        """Refuse, in one line, a checkpoint of another task or another model shape."""
        task = (payload.get("config") or {}).get("task")
        if task is not None and task != self.cfg.task:
            raise CheckpointError(
                f"{path}: a checkpoint of task {task!r}; this run is {self.cfg.task!r} (--resume continues the "
                "same run; to start from its weights use --checkpoint)"
            )
        mine, theirs = self.model.state_dict(), payload["model"]
        missing = [k for k in mine if k not in theirs]
        unexpected = [k for k in theirs if k not in mine]
        shapes = [
            f"{k} {tuple(theirs[k].shape)} here {tuple(v.shape)}"
            for k, v in mine.items()
            if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)
        ]
        if missing or unexpected or shapes:
            first = (shapes or missing or unexpected)[0]
            raise CheckpointError(
                f"{path}: written for another model ({len(missing)} keys missing, {len(unexpected)} unexpected, "
                f"{len(shapes)} of another shape; first: {first}); resume with the config it was written with"
            )

    # -- signals -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stopping_on_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM ask the loop to stop at the next step boundary with a checkpoint; a second
        SIGINT interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def ask_to_stop(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum
            if self.world.is_main:
                print(
                    f"albef: {signal.Signals(signum).name} received: stopping after this step with a checkpoint "
                    "(Ctrl-C again to stop at once)",
                    file=sys.stderr,
                    flush=True,
                )

        previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop_requested(self) -> int | None:
        """The signal that asked to stop on any rank (every rank must call it at the same step)."""
        if not self.world.distributed:
            return self._stop_signal
        flag = torch.tensor([float(self._stop_signal or 0)], device=self.precision.device)
        # Ranks may have seen the signal a step apart: agree on stopping now (the largest number wins).
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    def _stop_now(self, signum: int) -> None:
        """Checkpoint the step just finished (unless it already is) and raise :class:`RunInterrupted`."""
        name = ckpt.checkpoint_name(self.state.global_step)
        path = self._last_checkpoint
        if path is None or path.name != name:
            path = self.save_checkpoint()
        raise RunInterrupted(
            f"stopped by {signal.Signals(signum).name} after step {self.state.global_step}; checkpoint "
            f"{path or self.output_dir / ckpt.CHECKPOINT_DIR / name}; continue with --resume auto",
            signum,
        )

    def _set_aside_later_checkpoints(self, resumed: Path) -> None:
        """Resuming this run from an older checkpoint: its later ones move to ``checkpoints/superseded/``."""
        directory = self.output_dir / ckpt.CHECKPOINT_DIR
        if not self.world.is_main or resumed.resolve().parent != directory.resolve():
            return
        later = [
            p for p in ckpt.list_checkpoints(directory) if ckpt.checkpoint_step(p) > self.state.global_step
        ]
        if not later:
            return
        aside = directory / "superseded"
        aside.mkdir(exist_ok=True)
        for path in later:
            shutil.move(str(path), aside / path.name)
        print(
            f"albef: resuming from step {self.state.global_step}: moved {len(later)} later checkpoint(s) to "
            f"{aside}",
            file=sys.stderr,
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
            total = sum(losses.values()) / self.cfg.optim.accum_steps
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
            self._set_aside_later_checkpoints(path)
        with self._stopping_on_signals():
            return self._fit(path)

    def _fit(self, path: Path | None) -> TrainResult:
        result = TrainResult(self.state)
        self.model.train()
        last_checkpoint: Path | None = path
        metrics = self.output_dir / "metrics.jsonl"
        with MetricsLog(metrics, enabled=self.world.is_main, after_step=self.state.global_step) as log:
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
                payload = {
                    "model": self.model.state_dict(),
                    "epoch": epoch,
                    "metric": self.select,
                    "value": value,
                    "config": to_dict(self.cfg),
                    "albef_version": __version__,
                }
                atomic_torch_save(payload, self.output_dir / BEST_CHECKPOINT)

    def _run_epoch(self, log: MetricsLog, result: TrainResult, validate: bool = False) -> Path | None:
        accum = self.cfg.optim.accum_steps
        bar = self._progress_bar()
        saved: Path | None = None
        tic = time.perf_counter()
        # A trailing micro-batch that cannot complete an accumulation group is skipped (like drop_last), so
        # its gradient never leaks into the next epoch's first step.
        usable = self.iters_per_epoch - self.iters_per_epoch % accum
        for batch in self._batches():
            data_time = time.perf_counter() - tic
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
            with _naming_nondeterministic_ops():
                outputs = self._forward_backward(batch, alpha, sync_grads=step_now)
            self.state.batch_in_epoch += 1
            if not step_now:
                tic = time.perf_counter()
                continue
            with _naming_nondeterministic_ops():
                self._optimizer_step()
            self.sync()
            self.state.global_step += 1
            record = self._record(outputs, lr, alpha, len(batch), data_time, time.perf_counter() - tic)
            result.history.append(record)
            log.write(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    {k: f"{v:.3f}" for k, v in record.items() if k.endswith("_loss")}, refresh=False
                )
            every = self.cfg.runtime.checkpoint_every
            if every and self.state.global_step % every == 0 and not self._done():
                saved = self.save_checkpoint() or saved
            signum = self._stop_requested()
            if signum is not None:
                if self.state.batch_in_epoch >= usable:  # the epoch's last step: resume starts the next
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
                self._stop_now(signum)
            if self._done():
                break
            tic = time.perf_counter()
        if bar is not None:
            bar.close()
        if self.state.batch_in_epoch >= usable:
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            if validate:  # the checkpoint follows the validation, so it records the best epoch
                return saved
        return self.save_checkpoint() or saved

    def _record(
        self,
        outputs: dict[str, Tensor],
        lr: float,
        alpha: float,
        batch_size: int,
        data_time: float,
        step_time: float,
    ) -> dict[str, float]:
        record: dict[str, float] = {"step": self.state.global_step, "epoch": self.state.epoch}
        for name, value in outputs.items():
            record[name] = float(value.detach().float().mean())
        record["loss"] = sum(v for k, v in record.items() if k.endswith("_loss"))
        items = batch_size * self.cfg.optim.accum_steps * self.world.world_size
        record.update(
            lr=lr,
            alpha=alpha,
            samples_per_s=items / max(step_time, 1e-9),
            data_time=data_time,
            step_time=step_time,
            peak_memory_mb=_peak_memory_mb(self.precision.device),
        )
        return record

    def _progress_bar(self) -> Any:
        if not self.show_progress:
            return None
        from tqdm import tqdm

        remaining = min(self.steps_per_epoch, self.total_steps - self.state.global_step)
        done = self.state.batch_in_epoch // self.cfg.optim.accum_steps
        return tqdm(
            total=remaining + done,
            initial=done,
            desc=f"epoch {self.state.epoch}",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
