"""The kinds of expected failure, each with its own exit status.

Every failure the harness can foresee (bad input, bad config, a checkpoint that cannot be used, a device that
is not there, a full disk, a loss that became NaN, a run folder held by another run) is raised as a subclass
of :class:`AlbefError`. The CLI prints it as one line naming what and where, and exits with the class's
:attr:`AlbefError.exit_code`; any other exception is a bug and keeps its traceback. This module sits below
every other one (it imports nothing from the package), so each layer can raise the kind that fits.

A run stopped by a signal is not an error: training writes a checkpoint and the CLI exits with
:data:`EXIT_SIGINT` or :data:`EXIT_SIGTERM` (128 + the signal number, as a shell reports it).
"""

from __future__ import annotations

import errno
import os

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
"""A check the command performs failed (a regression, a metric below chance) or an unexpected error."""
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class AlbefError(Exception):
    """An expected failure: the CLI prints ``str(err)`` as one line and exits with :attr:`exit_code`."""

    exit_code = 2
    kind = "usage"


class ConfigError(AlbefError, ValueError):
    """A configuration value or key is invalid; the message names the key and where it came from."""

    exit_code = 2
    kind = "config"


class DataError(AlbefError, ValueError):
    """An input file (annotations, images, predictions, scores) is missing or malformed."""

    exit_code = 3
    kind = "data"


class CheckpointError(AlbefError, ValueError):
    """A checkpoint cannot be read (corrupt, truncated, unsafe) or does not fit the model or task."""

    exit_code = 4
    kind = "checkpoint"


class DeviceError(AlbefError):
    """The requested device or precision is not available on this machine."""

    exit_code = 5
    kind = "device"


class StorageError(AlbefError, OSError):
    """A file could not be written: no space left, a quota or a file-size limit (the message names it)."""

    exit_code = 6
    kind = "storage"


class NonFiniteLossError(AlbefError, FloatingPointError):
    """A loss became NaN or infinite; the message names the step, the loss part and the last checkpoint."""

    exit_code = 7
    kind = "non-finite loss"


class RunFolderError(AlbefError):
    """The output folder is in use by a live run or holds another run's files."""

    exit_code = 8
    kind = "run folder"


EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_CHECK_FAILED, "a check failed (regression, below chance), or an unexpected error (with traceback)"),
    (ConfigError.exit_code, "usage or configuration error"),
    (DataError.exit_code, "bad input data: annotation, image, predictions or score file"),
    (CheckpointError.exit_code, "checkpoint unreadable, corrupt, unsafe, or not for this model/task"),
    (DeviceError.exit_code, "device or precision not available"),
    (StorageError.exit_code, "a file could not be written: disk full, quota, file-size limit"),
    (NonFiniteLossError.exit_code, "a loss became NaN or infinite"),
    (
        RunFolderError.exit_code,
        "output in use: a live run holds it, another run is there, or an earlier report",
    ),
    (EXIT_SIGINT, "interrupted (SIGINT, Ctrl-C); training wrote a checkpoint first"),
    (EXIT_SIGTERM, "terminated (SIGTERM, e.g. preemption); training wrote a checkpoint first"),
)
"""Every exit status of the ``albef`` command, for ``--help`` and the README."""

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_out_of_space(err: BaseException) -> bool:
    """Whether ``err`` is a write refused for lack of space (disk full, quota, file-size limit)."""
    if isinstance(err, OSError) and err.errno in _NO_SPACE:
        return True
    # torch's zip writer reports a short write as "... unexpected pos N vs M" or "file write failed".
    text = str(err)
    return isinstance(err, RuntimeError) and ("unexpected pos" in text or "file write failed" in text)


def storage_error(path: str | os.PathLike[str], err: BaseException) -> StorageError:
    """The one-line :class:`StorageError` for a failed write of ``path``."""
    reason = os.strerror(err.errno) if isinstance(err, OSError) and err.errno else "short write"
    where = os.path.dirname(os.path.abspath(path)) or "."
    try:
        stats = os.statvfs(where)
        free = f"{stats.f_bavail * stats.f_frsize / 2**20:.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    return StorageError(
        f"could not write {os.fspath(path)}: {reason} (no space left on the device, a quota or a file-size "
        f"limit; {free}); earlier files are intact"
    )


class RunInterrupted(AlbefError):
    """A signal stopped the run after it wrote a checkpoint; the exit status is 128 + the signal number."""

    kind = "interrupted"

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
