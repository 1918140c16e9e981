"""Training checkpoints: atomic writes, everything needed for an exact resume, retention of the last K.

A checkpoint holds the model (EMA teachers and queues included), optimizer, gradient scaler, the
position in the data (epoch, batches done in it, optimizer steps), every RNG state, the config and the git
revision. It is written to a temporary file in the same directory, flushed and fsynced, then renamed over the
target, so a crash during the write leaves the previous checkpoint intact and readable.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from albef.checkpoint.io import torch_load_safe
from albef.config.io import to_dict
from albef.config.schema import ExperimentConfig
from albef.errors import CheckpointError, ConfigError
from albef.fileio import atomic_torch_save
from albef.version import __version__

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_name(global_step: int) -> str:
    """File name of the checkpoint taken after ``global_step`` optimizer steps."""
    return f"step-{global_step:08d}.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG state a training step can draw from."""
    name, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # Plain tensors and numbers only, so checkpoints load with ``weights_only=True``.
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        # Per visible device: a job may see fewer or more GPUs than the one that saved (the others keep theirs).
        for device, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """Checkpoints in ``directory``, oldest first (by step)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(directory: str | os.PathLike[str], keep_last: int, newest_step: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints up to step ``newest_step`` (the one just written).

    Files of later steps are never touched (``keep_last <= 0`` keeps everything).
    """
    if keep_last <= 0:
        return
    ours = [p for p in list_checkpoints(directory) if checkpoint_step(p) <= newest_step]
    for path in ours[:-keep_last]:
        path.unlink(missing_ok=True)


def checkpoint_step(path: str | os.PathLike[str]) -> int:
    """The optimizer step in a checkpoint's file name (``step-00000012.pt`` -> 12)."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path}: not a checkpoint file name (step-NNNNNNNN.pt)")
    return int(match.group(1))


TRAINING_KEYS = ("model", "optimizer", "state", "rng")


def load_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint written by this package (only tensors, numbers, strings, lists, dicts).

    Raises:
        CheckpointError: The file is unreadable, unsafe, or not a training checkpoint (the message names it).
    """
    payload = torch_load_safe(path)
    if not isinstance(payload, dict) or any(key not in payload for key in TRAINING_KEYS):
        raise CheckpointError(
            f"{path}: not a training checkpoint of albef (it has no {'/'.join(TRAINING_KEYS)}); to start from "
            "its weights use --checkpoint instead of --resume"
        )
    return payload


def newest_readable_checkpoint(directory: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that reads, and its payload; a corrupt newer one is skipped with
    a warning on stderr.

    Raises:
        CheckpointError: There are checkpoints, but none of them reads.
    """
    found = list_checkpoints(directory)
    for path in reversed(found):
        try:
            return path, load_training_checkpoint(path)
        except CheckpointError as err:
            print(f"albef: warning: skipping an unreadable checkpoint: {err}", file=sys.stderr)
    if found:
        raise CheckpointError(f"{directory}: none of its {len(found)} checkpoints could be read (see above)")
    return None


def resolve_resume(
    resume: str | None, output_dir: str | os.PathLike[str]
) -> tuple[Path, dict[str, Any]] | None:
    """``None``/``""`` -> start fresh; ``auto`` -> the newest readable checkpoint of the run, if any; else the
    file ``resume`` names. Returns the path and its payload."""
    if not resume:
        return None
    if resume == "auto":
        return newest_readable_checkpoint(Path(output_dir) / CHECKPOINT_DIR)
    return Path(resume), load_training_checkpoint(resume)


def check_fits(path: Path, payload: dict[str, Any], model: torch.nn.Module, task: str) -> None:
    """Refuse, in one line, a training checkpoint of another task or another model shape.

    Raises:
        CheckpointError: Naming the file, the task or the first differing key.
    """
    saved_task = (payload.get("config") or {}).get("task")
    if saved_task is not None and saved_task != task:
        raise CheckpointError(
            f"{path}: a checkpoint of task {saved_task!r}; this run is {task!r} (--resume continues the same "
            "run; to start from its weights use --checkpoint)"
        )
    mine, theirs = model.state_dict(), payload["model"]
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


def set_aside_later_checkpoints(resumed: Path, directory: Path, step: int) -> None:
    """Resuming a run from an older checkpoint of its own: its later ones move to ``directory/superseded/``,
    so that ``--resume auto`` cannot pick the abandoned line up again."""
    if resumed.resolve().parent != directory.resolve():
        return
    later = [p for p in list_checkpoints(directory) if checkpoint_step(p) > step]
    if not later:
        return
    aside = directory / "superseded"
    aside.mkdir(exist_ok=True)
    for path in later:
        shutil.move(str(path), aside / path.name)
    print(
        f"albef: resuming from step {step}: moved {len(later)} later checkpoint(s) to {aside}",
        file=sys.stderr,
    )


def check_world_size(path: Path, epoch: int, batch_in_epoch: int, saved_world: int, world_size: int) -> str:
    """Whether a checkpoint of ``saved_world`` ranks may resume on ``world_size``: at an epoch boundary yes (the
    next epoch is sharded over this job's ranks; returns a note saying so), in the middle of an epoch no, since
    the position in the old shards means nothing on the new ones.

    Raises:
        ConfigError: Mid-epoch, with what to do.
    """
    if batch_in_epoch:
        raise ConfigError(
            f"{path} was written by a {saved_world}-rank job in the middle of epoch {epoch} (batch "
            f"{batch_in_epoch}); this job has {world_size}. Resume it with {saved_world} ranks (torchrun "
            "--nproc_per_node / srun --ntasks), or from a checkpoint taken at the end of an epoch"
        )
    return f"resuming a {saved_world}-rank checkpoint on {world_size} ranks at the start of epoch {epoch}"


def save_best(
    path: Path, model: nn.Module, epoch: int, metric: str, value: float, cfg: ExperimentConfig
) -> Path:
    """``best.pt``: the model weights of the best validation epoch so far, with the metric that chose it."""
    payload = {"model": model.state_dict(), "epoch": epoch, "metric": metric, "value": value}
    payload.update(config=to_dict(cfg), albef_version=__version__)
    return atomic_torch_save(payload, path)
