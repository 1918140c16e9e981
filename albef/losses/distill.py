"""Soft-target cross-entropy, the distillation term shared by every ALBEF loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def soft_cross_entropy(logits: Tensor, targets: Tensor, dim: int = -1) -> Tensor:
    """Per-row ``-sum(targets * log_softmax(logits))`` along ``dim`` (no reduction over rows).

    With a no-grad target this equals the KL divergence up to a constant (the official code's form).

    Args:
        logits: Student logits, e.g. (B, C).
        targets: Target distribution of the same shape.
        dim: The class axis.

    Returns:
        Per-row losses with ``dim`` reduced.
    """
    return -(F.log_softmax(logits, dim=dim) * targets).sum(dim=dim)
