"""Per-sample randomness follows the epoch in loader workers too, persistent or not (issue: every epoch
replayed epoch 0's captions and augmentations with persistent workers)."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest
import torch

from albef.data.datasets import EpochConcatDataset, EpochIndex, RecordDataset
from albef.data.loaders import build_loader, set_epoch


class Draws(RecordDataset[int]):
    """Each sample: its index, a draw of the torch generator (augmentations) and one of ``rng`` (captions)."""

    def build(self, record: int, index: int, rng: random.Random) -> Any:
        return (index, float(torch.rand(())), rng.random())


def collate(samples: list[Any]) -> list[Any]:
    return samples


def stream(num_workers: int, persistent: bool, epochs: int = 3) -> list[list[Any]]:
    parts = [Draws(list(range(10)), lambda x: x, source="a"), Draws(list(range(6)), lambda x: x, source="b")]
    loader = build_loader(
        EpochConcatDataset(parts),
        batch_size=4,
        collate_fn=collate,
        train=True,
        num_workers=num_workers,
        persistent_workers=persistent,
        seed=3,
    )
    out = []
    for epoch in range(epochs):
        set_epoch(loader, epoch)
        out.append([sample for batch in loader for sample in batch])
    return out


@pytest.mark.parametrize("persistent", [True, False])
def test_workers_give_the_single_process_stream_and_epochs_differ(persistent: bool) -> None:
    single = stream(0, False)
    assert stream(2, persistent) == single
    for epoch in (1, 2):  # the same index draws other captions and augmentations in another epoch
        before = {s[0]: s[1:] for s in single[epoch - 1]}
        now = {s[0]: s[1:] for s in single[epoch]}
        common = before.keys() & now.keys()
        assert common and all(before[i] != now[i] for i in common)


def test_an_epoch_index_survives_pickling_and_reaches_the_part() -> None:
    index = pickle.loads(pickle.dumps(EpochIndex(12, 5)))
    assert (int(index), index.epoch) == (12, 5)
    parts = [Draws([0, 1], lambda x: x, source="a"), Draws([0, 1, 2], lambda x: x, source="b")]
    data = EpochConcatDataset(parts)
    parts[1].set_epoch(5)
    assert data[EpochIndex(3, 5)] == parts[1][1]  # local index 1 of the second part, epoch 5
    assert data[EpochIndex(3, 4)] != parts[1][1]
