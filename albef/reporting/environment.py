"""Where and how a run happened: versions, device, host, git revision, times, and checkpoint digests.

Everything here is read on demand (nothing at import). Library versions come from the installed
distributions' metadata, so collecting them does not import transformers.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from albef.reporting.schema import Environment

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout holding the package (a source install); :func:`git_revision` asks git about it."""

HASH_CHUNK_BYTES = 1 << 20
GIT_TIMEOUT_S = 10.0


def utc_now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds and a ``Z`` suffix (``2024-05-01T12:00:00Z``)."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


_HASHED: dict[tuple[str, int, int], str] = {}
"""Digests already computed in this process, by (resolved path, size, modification time)."""


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = HASH_CHUNK_BYTES) -> str:
    """Hex SHA-256 of a file's content, read in chunks so that multi-GB checkpoints fit in memory. A file
    hashed before in this process and unchanged since (same size and modification time) is not read again:
    an evaluation names its checkpoint in the feature-cache key, the resume key and the report."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(chunk_bytes), b""):
                digest.update(chunk)
        _HASHED[key] = digest.hexdigest()
    return _HASHED[key]


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``""`` when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def cpu_model() -> str:
    """The CPU model string (``model name`` in ``/proc/cpuinfo``), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU model (``torch.cuda.get_device_name``) on CUDA, the CPU model otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_count() -> int | None:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def git_revision(root: str | os.PathLike[str] = REPO_ROOT) -> str | None:
    """The commit of the checkout at ``root``, with ``+dirty`` when tracked files differ; ``None`` outside git.

    ``--no-optional-locks`` keeps ``git status`` from taking the index lock, so a report never blocks a
    concurrent git command in the same checkout.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=GIT_TIMEOUT_S,
        ).stdout.strip()

    try:
        revision = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return revision + ("+dirty" if dirty else "")


def cuda_versions(device: torch.device) -> tuple[str | None, str | None]:
    """``(CUDA, cuDNN)`` versions torch was built with, on a CUDA device; ``(None, None)`` elsewhere."""
    if device.type != "cuda":
        return None, None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return torch.version.cuda, None if cudnn is None else str(cudnn)


def collect_environment(
    device: torch.device,
    precision: str,
    seed: int | None = None,
    start_time: str = "",
    wall_time_s: float | None = None,
) -> Environment:
    """Versions, device, host and git facts of this process for a :class:`RunReport`.

    Args:
        device: The device the run used.
        precision: The run's precision (a comma list when a benchmark sweeps several).
        seed: The run's seed.
        start_time: When the run started (:func:`utc_now_iso`).
        wall_time_s: How long the run took.
    """
    cuda, cudnn = cuda_versions(device)
    return Environment(
        device=str(device),
        device_name=device_name(device),
        precision=precision,
        torch=torch.__version__,
        timm=package_version("timm"),
        transformers=package_version("transformers"),
        python=platform.python_version(),
        cuda=cuda,
        cudnn=cudnn,
        cpu_threads=torch.get_num_threads(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        cpu_count=cpu_count(),
        platform=platform.platform(),
        git=git_revision(),
        seed=seed,
        start_time=start_time,
        wall_time_s=wall_time_s,
    )
