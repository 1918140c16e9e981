"""Distributed helpers that are inert in a single process.

``init_distributed()`` reads the ``torchrun`` environment (RANK, WORLD_SIZE, LOCAL_RANK) and starts NCCL on
CUDA or gloo on CPU; without those variables it returns a single-process :class:`World`. Every collective
below returns its input (or does nothing) when no process group is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def init_distributed(device_type: str) -> World:
    """Initialise the process group from the torchrun environment, or return a single-process world."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return World()
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, init_method="env://")
    return World(rank, world_size, local_rank)


def is_distributed() -> bool:
    """A process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def current_world() -> World:
    """The running process group's rank and size (a single process when none is initialised)."""
    if not is_distributed():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


@torch.no_grad()
def all_gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (B, ...) from every rank along dim 0 (no gradient); identity in one process."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks in place and return it; identity in one process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj`` in rank order; ``[obj]`` in one process. Every rank must call it."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every rank; nothing in one process."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
