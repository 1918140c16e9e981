"""DataLoader construction: sharded, resumable sampling and reproducible workers.

:class:`ResumableSampler` is a ``DistributedSampler`` (works without an initialised process group: rank and
world size are passed in) that can start mid-epoch, so a resumed run continues with exactly the batches an
uninterrupted run would have drawn. Its indices carry their epoch (:class:`~albef.data.datasets.EpochIndex`),
so a sample's randomness is its epoch's in a loader worker too, persistent or not; datasets with ``set_epoch``
are told the epoch as well (sampling without the loader).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sized
from typing import Any, cast

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from albef.data.datasets import EpochIndex, RecordDataset


class ResumableSampler(DistributedSampler[int]):
    """A rank's shard of a (shuffled) epoch, optionally skipping the first ``start`` indices.

    Args:
        dataset: The dataset (only its length is used).
        rank: This process's rank.
        world_size: Number of processes.
        shuffle: Shuffle with a permutation seeded by ``seed + epoch``.
        seed: Base seed, identical on every rank.
        drop_last: Drop the tail instead of padding with repeated indices (training).
    """

    def __init__(
        self,
        dataset: Sized,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` indices of this rank's shard in the current epoch (resume)."""
        self.start = start

    def __iter__(self) -> Iterator[int]:
        """This rank's indices of the epoch from ``start`` on, each an :class:`EpochIndex` of the epoch."""
        indices = list(super().__iter__())
        return iter([EpochIndex(i, self.epoch) for i in indices[self.start :]])

    def __len__(self) -> int:
        return self.num_samples - self.start


def set_epoch(loader: DataLoader[Any], epoch: int, start_batch: int = 0) -> None:
    """Tell the loader's sampler and dataset the epoch, and where in it to start (in batches)."""
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    if isinstance(sampler, ResumableSampler):
        sampler.set_start(start_batch * (loader.batch_size or 1))
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the main process, which stops at a step boundary with a
    checkpoint (a terminal's Ctrl-C and a scheduler's SIGTERM reach every process of the group); the workers
    end with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _parts(dataset: Dataset[Any]) -> list[Dataset[Any]]:
    """The datasets a (possibly concatenated) dataset is made of."""
    if isinstance(dataset, ConcatDataset):
        return [part for child in dataset.datasets for part in _parts(child)]
    return [dataset]


def build_loader(
    dataset: Dataset[Any],
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any],
    *,
    train: bool,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader[Any]:
    """A DataLoader with the official settings: training shuffles and drops the last partial batch.

    Args:
        dataset: The dataset.
        batch_size: Per-process batch size.
        collate_fn: One of ``albef.data.collate``'s collators.
        train: Shuffle + drop_last (training) or ordered, keep every sample (evaluation).
        num_workers: Loader worker processes (0 loads in the main process).
        pin_memory: Pin host memory (useful with CUDA).
        persistent_workers: Keep workers alive between epochs (ignored without workers).
        seed: Base seed of the shuffling.
        rank: This process's rank.
        world_size: Number of processes; evaluation shards pad with repeated samples when uneven.
    """
    sized = cast(Sized, dataset)
    if train:
        for part in _parts(dataset):
            if isinstance(part, RecordDataset):
                part.refill = True  # a skipped image is replaced, so batches keep their size
    sampler = ResumableSampler(
        sized, rank=rank, world_size=world_size, shuffle=train, seed=seed, drop_last=train
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        persistent_workers=persistent_workers and num_workers > 0,
        drop_last=train,
        worker_init_fn=_ignore_stop_signals if num_workers > 0 else None,
        # Its own generator: creating an iterator (each epoch, and again on resume) must not draw from the
        # global torch RNG, whose state a checkpoint restores for the model's own randomness.
        generator=torch.Generator().manual_seed(seed),
    )
