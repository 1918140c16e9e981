"""Distributed helpers that are inert in a single process.

``init_distributed()`` reads the ``torchrun`` environment (RANK, WORLD_SIZE, LOCAL_RANK), or SLURM's when a job
step was started by ``srun`` without torchrun, and starts NCCL on CUDA or gloo on CPU; without either it returns a
single-process :class:`World`. Every collective
below returns its input (or does nothing) when no process group is initialised.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
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


SLURM_PORT_BASE = 20000
"""Without ``MASTER_PORT``, a SLURM job's rendezvous port is ``SLURM_PORT_BASE + job id % 10000``."""


def expand_nodelist(nodelist: str) -> list[str]:
    """The host names of a SLURM node list: ``gpu[01-03,07],login`` -> gpu01, gpu02, gpu03, gpu07, login."""
    hosts: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            if not last:
                hosts.append(prefix + first)
                continue
            hosts += [prefix + str(i).zfill(len(first)) for i in range(int(first), int(last) + 1)]
    return hosts


def launch_environment(env: Mapping[str, str]) -> dict[str, str] | None:
    """The process's place in the job from its environment: torchrun's variables (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) or, under ``srun`` without torchrun, SLURM's
    (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the first host of ``SLURM_JOB_NODELIST`` as the
    master, the port from ``MASTER_PORT`` or the job id). ``None``: a single process."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return {name: env[name] for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if name in env}
    if "SLURM_PROCID" not in env or "SLURM_NTASKS" not in env:
        return None
    nodes = expand_nodelist(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "localhost")))
    port = env.get("MASTER_PORT") or str(SLURM_PORT_BASE + int(env.get("SLURM_JOB_ID", "0")) % 10000)
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": env.get("MASTER_ADDR") or (nodes[0] if nodes else "localhost"),
        "MASTER_PORT": port,
    }


def init_distributed(device_type: str) -> World:
    """Initialise the process group from the torchrun (or SLURM) environment, or return a single-process world."""
    launch = launch_environment(os.environ)
    if launch is None:
        return World()
    os.environ.update(launch)  # init_method="env://" reads them; SLURM's become torchrun's
    rank, world_size = int(launch["RANK"]), int(launch["WORLD_SIZE"])
    local_rank = int(launch.get("LOCAL_RANK", 0))
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
