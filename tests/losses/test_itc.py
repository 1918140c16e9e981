"""ITC targets (diagonal, image-id positives over batch + queue) and the distilled contrastive loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from albef.losses import contrastive_targets, itc_loss


def _log_softmax(row: list[float]) -> list[float]:
    """Plain-Python log-softmax of one row (the hand computation)."""
    top = max(row)
    lse = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - lse for x in row]


def _softmax(row: list[float]) -> list[float]:
    return [math.exp(x) for x in _log_softmax(row)]


def _soft_ce(logits: list[list[float]], targets: list[list[float]]) -> float:
    """Mean over rows of ``-sum_j t_j log softmax(s)_j``."""
    rows = [
        -sum(t * ls for t, ls in zip(tr, _log_softmax(sr), strict=True))
        for sr, tr in zip(logits, targets, strict=True)
    ]
    return sum(rows) / len(rows)


def test_diagonal_targets_cover_the_batch_columns_only() -> None:
    targets = contrastive_targets(3, 7)
    expected = torch.zeros(3, 7)
    expected[:, :3] = torch.eye(3)
    assert torch.equal(targets, expected)


def test_id_targets_share_mass_equally_over_batch_and_queue() -> None:
    idx = torch.tensor([3, 5, 1, 5])
    queue_ids = torch.tensor([5, -100, 3, 7, -100])
    targets = contrastive_targets(4, 9, idx, torch.cat([idx, queue_ids]))
    expected = torch.zeros(4, 9)
    expected[0, [0, 6]] = 1 / 2  # id 3: itself and one queue entry
    expected[1, [1, 3, 4]] = 1 / 3  # id 5: itself, its in-batch duplicate and one queue entry
    expected[3, [1, 3, 4]] = 1 / 3
    expected[2, 2] = 1.0  # id 1: only itself
    assert torch.allclose(targets, expected)
    assert torch.allclose(targets.sum(dim=1), torch.ones(4))


def test_unfilled_queue_slots_never_match() -> None:
    idx = torch.tensor([0, 1, 2])
    idx_all = torch.cat([idx, torch.full((6,), -100)])
    targets = contrastive_targets(3, 9, idx, idx_all)
    assert torch.equal(targets[:, 3:], torch.zeros(3, 6))
    assert torch.equal(targets, contrastive_targets(3, 9))  # distinct ids: the diagonal


def test_id_targets_need_the_column_ids() -> None:
    with pytest.raises(ValueError, match="idx_all"):
        contrastive_targets(2, 4, torch.tensor([0, 1]))


def test_itc_loss_with_distillation_matches_a_hand_computation() -> None:
    sim_i2t = [[1.0, 0.0, 2.0, -1.0], [0.5, 1.5, 0.0, 0.25]]
    sim_t2i = [[0.2, -0.3, 1.0, 0.0], [2.0, 0.1, -0.5, 0.7]]
    teacher_i2t = [[0.9, 0.1, 1.5, -1.2], [0.0, 2.0, 0.3, 0.1]]
    teacher_t2i = [[0.4, 0.0, 0.5, 0.2], [1.0, 1.0, -1.0, 0.0]]
    alpha = 0.4
    hard = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]

    def mixed(teacher: list[list[float]]) -> list[list[float]]:
        return [
            [alpha * p + (1 - alpha) * y for p, y in zip(_softmax(tr), hr, strict=True)]
            for tr, hr in zip(teacher, hard, strict=True)
        ]

    expected = (_soft_ce(sim_i2t, mixed(teacher_i2t)) + _soft_ce(sim_t2i, mixed(teacher_t2i))) / 2
    loss = itc_loss(
        torch.tensor(sim_i2t),
        torch.tensor(sim_t2i),
        contrastive_targets(2, 4),
        torch.tensor(teacher_i2t),
        torch.tensor(teacher_t2i),
        alpha,
    )
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_itc_loss_without_teacher_is_cross_entropy_on_the_diagonal() -> None:
    gen = torch.Generator().manual_seed(0)
    sim_i2t, sim_t2i = torch.randn(3, 8, generator=gen), torch.randn(3, 8, generator=gen)
    targets = contrastive_targets(3, 8)
    labels = torch.arange(3)
    expected = (F.cross_entropy(sim_i2t, labels) + F.cross_entropy(sim_t2i, labels)) / 2
    assert torch.allclose(itc_loss(sim_i2t, sim_t2i, targets), expected, atol=1e-6)
    # alpha 0 ignores the teacher entirely
    teacher = torch.randn(3, 8, generator=gen)
    assert torch.allclose(itc_loss(sim_i2t, sim_t2i, targets, teacher, teacher, 0.0), expected, atol=1e-6)


def test_itc_loss_gradient_is_softmax_minus_target() -> None:
    gen = torch.Generator().manual_seed(1)
    sim_i2t = torch.randn(2, 5, generator=gen, requires_grad=True)
    sim_t2i = torch.randn(2, 5, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 5, generator=gen)
    hard = contrastive_targets(2, 5)
    itc_loss(sim_i2t, sim_t2i, hard, teacher, teacher, 0.4).backward()
    target = 0.4 * F.softmax(teacher, dim=1) + 0.6 * hard
    # d/ds of mean_b(-sum t log softmax(s)) / 2 = (softmax(s) - t) / (2B)
    expected = (F.softmax(sim_i2t.detach(), dim=1) - target) / 4
    assert sim_i2t.grad is not None
    assert torch.allclose(sim_i2t.grad, expected, atol=1e-7)
