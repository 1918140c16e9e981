"""Image-text contrastive loss with momentum distillation over [local momentum batch | queue].

Columns of the similarity matrices are the candidates: the local momentum features first, then the queue
(spec §2.1). Hard targets are the diagonal of the first B columns, or, when image ids are given
(retrieval), every column with the same id, with equal mass (spec §2.5). With distillation the target is
``alpha * softmax(teacher logits) + (1 - alpha) * hard``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from albef.losses.distill import soft_cross_entropy


def contrastive_targets(
    batch: int,
    columns: int,
    idx: Tensor | None = None,
    idx_all: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """Hard ITC targets (B, C).

    Args:
        batch: Rows B.
        columns: Candidates C = B + queue size.
        idx: Image ids of the batch (B,), or ``None`` for diagonal targets.
        idx_all: Image ids of every column (C,) when ``idx`` is given (queue slots still at -100 match
            nothing, since real ids are non-negative).
        device: Device of the result when ``idx`` is ``None``.

    Returns:
        Rows summing to 1: one-hot on the diagonal, or ``pos / pos.sum()`` over same-id columns.
    """
    if idx is None:
        targets = torch.zeros(batch, columns, device=device)
        targets[:, :batch].fill_diagonal_(1.0)
        return targets
    if idx_all is None:
        raise ValueError("idx_all (the ids of every column) is required with idx")
    pos = (idx.view(-1, 1) == idx_all.view(1, -1)).float()
    return pos / pos.sum(dim=1, keepdim=True)


def itc_loss(
    sim_i2t: Tensor,
    sim_t2i: Tensor,
    targets: Tensor,
    sim_i2t_m: Tensor | None = None,
    sim_t2i_m: Tensor | None = None,
    alpha: float = 0.0,
) -> Tensor:
    """``(L_i2t + L_t2i) / 2`` with soft targets.

    Args:
        sim_i2t: Student image->text logits (B, C), already divided by the temperature.
        sim_t2i: Student text->image logits (B, C).
        targets: Hard targets (B, C) from :func:`contrastive_targets` (the same for both directions).
        sim_i2t_m: Teacher logits (B, C) for distillation, or ``None`` (no distillation).
        sim_t2i_m: Teacher logits (B, C).
        alpha: Weight of the teacher distribution in the target.

    Returns:
        Scalar loss.
    """
    t_i2t, t_t2i = targets, targets
    if sim_i2t_m is not None and sim_t2i_m is not None:
        t_i2t = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * targets
        t_t2i = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * targets
    loss_i2t = soft_cross_entropy(sim_i2t, t_i2t, dim=1).mean()
    loss_t2i = soft_cross_entropy(sim_t2i, t_t2i, dim=1).mean()
    return (loss_i2t + loss_t2i) / 2
