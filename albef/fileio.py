"""Atomic file writes, the one implementation every layer uses.

A file is written to a temporary sibling, flushed and fsynced, given the mode the user's umask allows (as
``open`` would; ``mkstemp`` alone leaves 0600), then renamed over its target and the directory entry fsynced.
A crash or a full disk therefore leaves either the previous file or the new one, never a truncated file; a
write refused for lack of space becomes a one-line :class:`~albef.errors.StorageError` naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from albef.errors import is_out_of_space, storage_error

PathLike = str | os.PathLike[str]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary sibling, which then replaces ``path``.

    Args:
        path: The target file (its folder is created).
        write: Writes the whole content to the path it is given.

    Returns:
        ``path``.

    Raises:
        StorageError: The write failed for lack of space; ``path`` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and is_out_of_space(err):
            raise storage_error(path, err) from err
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: PathLike, payload: Any, indent: int | None = 2) -> Path:
    """:func:`atomic_write` of ``payload`` as JSON (keys sorted) with a final newline."""
    return atomic_write_text(path, json.dumps(payload, indent=indent, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` atomically (training states as well as state dicts)."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    return atomic_write(path, write)
