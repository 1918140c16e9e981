"""Every official model class at full size: a random state dict with the official keys, shapes and dtypes
loads strictly into our ``albef_base`` model and exports back bit-exactly, in the official order."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from albef.checkpoint import load_checkpoint, official_key, official_to_ours, ours_to_official, tie_groups
from albef.models import create_model, model_preset

# (official class in the layout JSON, our task, image_res of the official class). Building a full-size model
# and checking it takes ~6-15 s on 2 busy cores, so the default run covers two classes (retrieval: queues, image
# ids, teachers; TA: 18 layers with shared key/value, no teachers) and ``-m slow`` the other four.
# test_layout.py checks the exported keys, order, shapes and dtypes of all six on the meta device.
CLASSES = [
    pytest.param("pretrain", "pretrain", 256, marks=pytest.mark.slow, id="pretrain"),
    pytest.param("retrieval", "retrieval", 384, id="retrieval"),
    pytest.param("vqa", "vqa", 384, marks=pytest.mark.slow, id="vqa"),
    pytest.param("nlvr", "nlvr", 384, marks=pytest.mark.slow, id="nlvr"),
    pytest.param("pretrain_nlvr", "nlvr_pretrain", 256, id="pretrain_nlvr"),
    pytest.param("ve", "ve", 384, marks=pytest.mark.slow, id="ve"),
]
POOL = 1 << 25
"""Floats in the random pool (128 MiB): more than the largest tensor (the 30522x768 word embeddings)."""


@pytest.fixture(scope="module")
def official_layout(reference_dir: Path) -> dict[str, dict[str, Any]]:
    return json.loads((reference_dir / "albef_official_state_dict_layout.json").read_text())


class RandomViews:
    """Random float tensors as views of one random pool at distinct random offsets: distinct values per key
    without allocating (and page-faulting) another copy of the model."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.pool = torch.randn(POOL, generator=self.gen)
        self.starts: set[int] = set()

    def floats(self, shape: list[int]) -> Tensor:
        numel = math.prod(shape)
        start = int(torch.randint(0, POOL - numel + 1, (1,), generator=self.gen))
        while start in self.starts:
            start = (start + 1) % (POOL - numel + 1)
        self.starts.add(start)
        return self.pool[start : start + numel].view(shape)


def random_official(entries: dict[str, Any], ties: list[list[str]], seed: int) -> dict[str, Tensor]:
    """Official keys -> random tensors of the listed shapes/dtypes; tied keys get one tensor."""
    fill = RandomViews(seed)
    out: dict[str, Tensor] = {}
    for key, (shape, dtype) in entries.items():
        if key.endswith("position_ids"):
            out[key] = torch.arange(shape[-1]).view(shape)
        elif key == "queue_ptr":
            out[key] = torch.tensor([256])
        elif key == "idx_queue":
            out[key] = torch.randint(-100, 1000, shape, generator=fill.gen)
        else:
            assert dtype == "float32", key
            out[key] = fill.floats(shape)
    for group in ties:
        for key in group[1:]:
            out[key] = out[group[0]]
    return out


@pytest.mark.parametrize(("official_class", "task", "res"), CLASSES)
def test_full_size_official_state_dict_loads_strictly_and_round_trips(
    official_layout: dict[str, dict[str, Any]], official_class: str, task: str, res: int
) -> None:
    cfg = model_preset("albef_base")
    model = create_model(
        task, dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, image_res=res))
    )
    ties = [[official_key(k, task) for k in group] for group in tie_groups(model)]
    official = random_official(official_layout[official_class], ties, seed=len(official_class))

    report = load_checkpoint(model, task, official)
    assert report.source_layout == f"official:{task}" and report.conversion == "direct"
    assert report.missing == [] and report.unexpected == [] and report.resized == []
    assert report.teachers_copied == [] and report.teachers_kept == []

    exported = ours_to_official(model.state_dict(), task)
    assert list(exported) == list(official)
    for key, value in official.items():
        assert exported[key].dtype == value.dtype and torch.equal(exported[key], value), key
    back = official_to_ours(exported, task)
    assert back.keys() == model.state_dict().keys()
    assert all(back[k].data_ptr() == v.data_ptr() for k, v in model.state_dict().items())
