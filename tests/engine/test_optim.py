"""Parameter groups, the cosine and official staircase schedules, and the alpha ramp (spec §6.2-6.3)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from albef.config import load_config
from albef.config.schema import OptimConfig
from albef.engine.optim import (
    alpha_at,
    build_optimizer,
    build_schedule,
    cosine_lr,
    param_groups,
    set_lr,
    staircase_lr,
)
from tests.models import tiny_model


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.scale = nn.Parameter(torch.ones(4))  # 1-D, not named "bias"
        self.frozen = nn.Linear(4, 4)
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def _names(model: nn.Module, params: object) -> set[str]:
    ids = {id(p) for p in params}  # type: ignore[attr-defined]
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_param_groups_on_a_hand_built_module() -> None:
    model = _Toy()
    decay, no_decay = param_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert _names(model, decay["params"]) == {"linear.weight", "temp"}
    assert _names(model, no_decay["params"]) == {"linear.bias", "norm.weight", "norm.bias", "scale"}


def test_param_groups_of_the_pretraining_model() -> None:
    model = tiny_model("pretrain")
    decay, no_decay = param_groups(model, weight_decay=0.02)
    decayed, undecayed = _names(model, decay["params"]), _names(model, no_decay["params"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decayed | undecayed == trainable
    assert not decayed & undecayed
    # The EMA teachers are frozen and never reach the optimizer.
    teachers = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert teachers and all("_m." in n for n in teachers)
    assert not (decayed | undecayed) & teachers
    assert "temp" in decayed  # 0-dimensional, so decayed as officially
    params = dict(model.named_parameters())
    assert all(params[n].ndim != 1 and not n.endswith(".bias") for n in decayed)
    assert all(params[n].ndim == 1 or n.endswith(".bias") for n in undecayed)
    # Tied tensors appear once: AdamW refuses duplicates, and the counts add up.
    assert len(decay["params"]) + len(no_decay["params"]) == len(
        {id(p) for p in model.parameters() if p.requires_grad}
    )


def test_build_optimizer_uses_the_config() -> None:
    cfg = OptimConfig(lr=3e-4, weight_decay=0.1, betas=(0.8, 0.9), eps=1e-6)
    optimizer = build_optimizer(_Toy(), cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert all(
        g["lr"] == 3e-4 and g["betas"] == (0.8, 0.9) and g["eps"] == 1e-6 for g in optimizer.param_groups
    )
    set_lr(optimizer, 1.5e-5)
    assert [g["lr"] for g in optimizer.param_groups] == [1.5e-5, 1.5e-5]


def test_cosine_schedule_values() -> None:
    cfg = OptimConfig(lr=1e-4, warmup_lr=1e-6, min_lr=1e-5, warmup_steps=10)
    lr_at = cosine_lr(cfg, total_steps=110)
    assert lr_at(0, 0, 0) == pytest.approx(1e-6)  # warm-up starts at warmup_lr
    assert lr_at(5, 0, 5) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5)
    assert lr_at(10, 0, 10) == pytest.approx(1e-4)  # end of warm-up = peak
    assert lr_at(60, 0, 60) == pytest.approx(1e-5 + 0.5 * (1e-4 - 1e-5))  # half-way through the decay
    assert lr_at(110, 1, 0) == pytest.approx(1e-5)  # end of training = min_lr
    assert lr_at(500, 4, 0) == pytest.approx(1e-5)  # and stays there
    decay = [lr_at(s, 0, 0) for s in range(10, 111)]
    assert decay == sorted(decay, reverse=True)


def test_build_schedule_picks_by_name() -> None:
    cosine = build_schedule(OptimConfig(schedule="cosine", warmup_steps=0, lr=1.0, min_lr=0.0), 100)
    assert cosine(50, 0, 0) == pytest.approx(0.5)
    staircase = build_schedule(OptimConfig(schedule="staircase", epochs=2, lr=1.0, min_lr=0.0), 100)
    assert staircase(50, 1, 0) == pytest.approx(0.5)


@pytest.mark.parametrize(("epoch", "expected"), [(1, 9.14e-6), (2, 6.89e-6), (3, 4.11e-6), (4, 1.86e-6)])
def test_staircase_retrieval_coco_epochs(epoch: int, expected: float) -> None:
    lr_at = staircase_lr(load_config("retrieval_coco").optim)
    for it in (0, 1, 250, 10_000):  # one value for the whole epoch
        assert lr_at(0, epoch, it) == pytest.approx(expected, abs=5e-9)


def test_staircase_retrieval_coco_epoch_zero_is_flat() -> None:
    lr_at = staircase_lr(load_config("retrieval_coco").optim)  # warmup_lr == lr: no visible warm-up
    assert {lr_at(0, 0, it) for it in (0, 99, 100, 5000)} == {1e-5}


def test_staircase_vqa_warm_up_every_hundred_iterations() -> None:
    lr_at = staircase_lr(load_config("vqa").optim)
    got = [lr_at(it, 0, it) for it in (0, 100, 200, 300, 400)]
    assert got == pytest.approx([1e-5, 1.25e-5, 1.5e-5, 1.75e-5, 2e-5])
    assert lr_at(99, 0, 99) == pytest.approx(1e-5)  # a step of 100 iterations, not a ramp
    assert lr_at(199, 0, 199) == pytest.approx(1.25e-5)
    assert lr_at(9999, 0, 9999) == pytest.approx(2e-5)  # capped at lr after the warm-up
    # Epoch 1 of 8: cosine from epoch index, min_lr 1e-6.
    assert lr_at(0, 1, 0) == pytest.approx(1e-6 + 0.5 * 1.9e-5 * (1 + math.cos(math.pi / 8)))


@pytest.mark.parametrize(
    ("warmup", "epoch", "it", "expected"),
    [
        (True, 0, 0, 0.0),
        (True, 0, 25, 0.1),
        (True, 0, 50, 0.2),
        (True, 0, 99, 0.4 * 99 / 100),
        (True, 1, 0, 0.4),
        (True, 3, 77, 0.4),
        (False, 0, 0, 0.4),
        (False, 0, 50, 0.4),
    ],
)
def test_alpha_ramp(warmup: bool, epoch: int, it: int, expected: float) -> None:
    assert alpha_at(0.4, warmup, epoch, it, iters_per_epoch=100) == pytest.approx(expected)
