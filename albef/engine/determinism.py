"""Deterministic mode (``runtime.deterministic``): the same inputs give the same bits, run after run.

What breaks repeatability without it, measured on the CPU build of torch 2.14 at two threads: the
backward of advanced indexing (``embeds[idx]`` in the ITM negatives) is ``index_put_(accumulate=True)``,
which the CPU kernel parallelises with atomic float adds once a tensor has more than 32,768 elements and
more than one thread runs, so the order of the additions (and the last bits of the gradient) changes from
run to run. Two 20-step pretraining runs of the synthetic preset then differed in 278 of 314 tensors.
``torch.use_deterministic_algorithms(True)`` makes that kernel (and every other op with a deterministic
variant) take its serial or sorted path; ops without one raise, and :func:`explain_nondeterministic_op`
turns that into one line naming the op.

On CUDA the same switch also selects deterministic SDPA backward kernels (flash and memory-efficient
attention run their deterministic variants; cuDNN attention is excluded) and requires the cuBLAS
workspace setting :data:`CUBLAS_WORKSPACE`, which this module sets when it is absent; cuDNN is put in its
deterministic, non-benchmarking mode.

``None`` (the default) means on for CPU runs, where it costs little (see the README), and off on CUDA,
where deterministic kernels can be markedly slower.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from albef.config.io import ConfigError

CUBLAS_WORKSPACE = ":4096:8"
"""The ``CUBLAS_WORKSPACE_CONFIG`` value that makes cuBLAS reproducible (CUDA >= 10.2)."""


@dataclass
class Determinism:
    """What :func:`configure_determinism` set, for the run report.

    Attributes:
        enabled: Whether deterministic algorithms are on.
        settings: The switches it set, one short phrase each (empty when off).
    """

    enabled: bool
    settings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for logs and reports."""
        if not self.enabled:
            return "deterministic mode off"
        return "deterministic mode on (" + "; ".join(self.settings) + ")"


def wants_determinism(setting: bool | None, device: torch.device) -> bool:
    """Resolve ``runtime.deterministic``: ``None`` is on for CPU devices, off for accelerators."""
    return device.type == "cpu" if setting is None else bool(setting)


def configure_determinism(setting: bool | None, device: torch.device) -> Determinism:
    """Switch deterministic algorithms on or off for this process, as ``runtime.deterministic`` says.

    Args:
        setting: ``runtime.deterministic`` (``None``: on for CPU, off on CUDA).
        device: The run's device.

    Returns:
        What was set.
    """
    enabled = wants_determinism(setting, device)
    torch.use_deterministic_algorithms(enabled)
    if not enabled:
        return Determinism(False)
    settings = ["torch.use_deterministic_algorithms(True)"]
    if device.type == "cuda":
        if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
            # Read by cuBLAS when its first handle is created, so this must precede any CUDA matmul.
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
        settings.append(f"CUBLAS_WORKSPACE_CONFIG={os.environ['CUBLAS_WORKSPACE_CONFIG']}")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        settings += [
            "cudnn.deterministic",
            "deterministic SDPA backward (flash/efficient; no cuDNN attention)",
        ]
    return Determinism(True, settings)


class NondeterministicOpError(ConfigError):
    """An op without a deterministic kernel ran while ``runtime.deterministic`` is on (one-line CLI error)."""


_OP_PATTERN = re.compile(r"^(\S+) does not have a deterministic implementation")


def explain_nondeterministic_op(err: RuntimeError) -> str | None:
    """The one-line message for torch's "X does not have a deterministic implementation" error, else ``None``.

    Args:
        err: An error raised inside a step.

    Returns:
        A message naming the op and the way out, or ``None`` when ``err`` is something else.
    """
    match = _OP_PATTERN.search(str(err).strip())
    if match is None:
        return None
    return (
        f"{match.group(1)} has no deterministic implementation on this device, and runtime.deterministic "
        "is on; set runtime.deterministic=false to run with the non-deterministic kernel"
    )


@contextlib.contextmanager
def naming_nondeterministic_ops() -> Iterator[None]:
    """Turn torch's error for an op without a deterministic kernel into a one-line config error."""
    try:
        yield
    except RuntimeError as err:
        message = explain_nondeterministic_op(err)
        if message is None:
            raise
        raise NondeterministicOpError(message) from err


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
