"""A run folder belongs to one run: its identity, a lock against concurrent runs, and what resume may use.

``run.json`` records the run's identity when it starts: a hash of the config (less the keys that cannot change
its numbers, :data:`IDENTITY_EXEMPT`), the config itself, the start time, the git revision and the command
line. The rules, applied by :func:`claim_run_folder` before anything is written:

- a fresh run (no ``--resume``) needs a folder without another run's outputs (:data:`RUN_OUTPUTS` and
  checkpoints; a run that stopped before its first step left none and is taken over); it refuses otherwise;
- ``--resume auto`` or ``--resume PATH`` into a folder continues only the run with the same identity; the keys
  that differ are named otherwise;
- ``.lock`` holds an exclusive ``flock`` for the whole command, with the holder's pid, host and start time
  inside: a second run into the folder stops with a message naming the holder. The kernel drops the lock when
  its process dies, so a lock file left by a killed run is stale: it is reported and taken over.

A folder written before run folders had identities (checkpoints but no ``run.json``) is resumed by ``--resume
auto`` only when the newest checkpoint's own config has the same identity.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import fcntl
import hashlib
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from albef.errors import RunFolderError
from albef.fileio import atomic_write_json

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
IDENTITY_EXEMPT = (
    "optim.max_steps",
    "runtime.output_dir",
    "runtime.checkpoint_every",
    "runtime.keep_last",
    "runtime.log_every",
    "runtime.tensorboard",
    "runtime.wandb_project",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
)
"""Config keys that decide where the run stops, where and how often files are written or how data is loaded:
changing them does not make another run. ``optim.max_steps`` is a stopping point, so ``--resume auto
--max-steps N`` carries a run further (its lr schedule is then computed over the new total)."""

RUN_OUTPUTS = ("metrics.jsonl", "best.pt", "summary.json")
"""Files that show a run took steps (with any ``checkpoints/step-*.pt``). A folder holding only ``run.json`` and
``config.yaml`` is a run that stopped before its first step (a bad ``--checkpoint``, say): nothing there can be
lost, so a fresh run may take it over."""


def identity_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config (as a nested dict) without :data:`IDENTITY_EXEMPT`."""
    out = json.loads(json.dumps(config, default=str))
    for dotted in IDENTITY_EXEMPT:
        section, key = dotted.split(".")
        out.get(section, {}).pop(key, None)
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of the identity config, keys sorted."""
    text = json.dumps(identity_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any], limit: int = 5) -> list[str]:
    """``section.key: A -> B`` for every identity key that differs (at most ``limit``, then a count)."""
    left, right = identity_config(a), identity_config(b)
    lines: list[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), f"{prefix}.{key}" if prefix else key)
        elif x != y:
            lines.append(f"{prefix}: {x!r} -> {y!r}")

    walk(left, right, "")
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds the outputs of a run that took steps (:data:`RUN_OUTPUTS`, checkpoints)."""
    if any((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in RUN_OUTPUTS):
        return True
    return any((folder / "checkpoints").glob("step-*.pt"))


def read_identity(folder: Path) -> dict[str, Any] | None:
    """The folder's ``run.json``, or ``None`` when it has none (or it is unreadable)."""
    try:
        return json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(identity: Mapping[str, Any] | None) -> str:
    if identity is None:
        return "a run without run.json"
    return f"a run started {identity.get('started', '?')} with config hash {identity.get('config_hash', '?')}"


class RunLock:
    """An exclusive ``flock`` on ``folder/.lock`` for as long as this process runs (or until :meth:`release`).

    Args:
        folder: The run folder (created if missing).

    Raises:
        RunFolderError: Another live process holds the lock (its pid, host and start time are named).
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOCK_FILE
        self.stale: dict[str, Any] | None = None
        handle: IO[str] = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(handle)
            handle.close()
            raise RunFolderError(
                f"{folder} is in use by another run (pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')}, started {holder.get('started', '?')}); wait for it to end or use "
                "another --output-dir"
            ) from None
        previous = self._holder(handle)
        if previous:  # the file survived its holder: a killed run's lock, now ours
            self.stale = previous
        handle.seek(0)
        handle.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}, handle)
        handle.flush()
        self._handle: IO[str] | None = handle
        atexit.register(self.release)

    @staticmethod
    def _holder(handle: IO[str]) -> dict[str, Any]:
        handle.seek(0)
        try:
            return dict(json.loads(handle.read() or "{}"))
        except ValueError:
            return {}

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._handle is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


@dataclass
class RunClaim:
    """What :func:`claim_run_folder` decided: the lock it holds and whether the run is new."""

    lock: RunLock
    identity: dict[str, Any]
    fresh: bool


def claim_run_folder(
    folder: Path,
    config: Mapping[str, Any],
    resume: str | None,
    *,
    checkpoint_config: Mapping[str, Any] | None = None,
    argv: Sequence[str] | None = None,
    revision: str | None = None,
) -> RunClaim:
    """Lock ``folder`` and check that this run may write there (see the module docstring).

    Args:
        folder: The run's output folder.
        config: The run's config as a nested dict.
        resume: ``None`` (a fresh run), ``"auto"`` or a checkpoint path.
        checkpoint_config: For a folder without ``run.json``, the config stored in its newest checkpoint.
        argv: The command line, recorded in ``run.json``.
        revision: The git revision, recorded in ``run.json``.

    Returns:
        The claim; ``run.json`` is written when the folder had none.

    Raises:
        RunFolderError: The folder is locked, or holds another run.
    """
    lock = RunLock(folder)
    try:
        if lock.stale is not None:
            print(
                f"albef: taking over the stale lock of {folder} (pid {lock.stale.get('pid', '?')} on host "
                f"{lock.stale.get('host', '?')}, started {lock.stale.get('started', '?')}, no longer running)",
                file=sys.stderr,
            )
        digest = config_hash(config)
        occupied = holds_run(folder)
        existing = read_identity(folder) if occupied else None  # run.json alone: a run that never stepped
        if occupied and resume is None:
            raise RunFolderError(
                f"{folder} already holds {_describe(existing)}; continue it with --resume auto, or start this "
                "run in another --output-dir (nothing was changed)"
            )
        if existing is None and occupied and checkpoint_config is not None:
            existing = {"config_hash": config_hash(checkpoint_config), "config": dict(checkpoint_config)}
        if existing is not None and existing.get("config_hash") != digest:
            changed = config_differences(existing.get("config", {}), config)
            raise RunFolderError(
                f"{folder} holds {_describe(existing)}, another run than this one ("
                + ("; ".join(changed) or "config differs")
                + "); resume it with its own config, or use another --output-dir"
            )
        identity = read_identity(folder) if occupied else None
        fresh = identity is None
        if identity is None:  # a new run, or one written before run.json existed
            identity = {
                "config_hash": digest,
                "started": _now(),
                "git": revision,
                "argv": list(argv if argv is not None else sys.argv),
                "config": identity_config(config),
            }
            atomic_write_json(folder / RUN_FILE, identity, indent=1)
        return RunClaim(lock, identity, fresh)
    except BaseException:
        lock.release()
        raise
