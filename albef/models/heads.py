"""Small task heads: ITM, the NLVR²/SNLI-VE classifier MLP, the text-assignment head."""

from __future__ import annotations

from torch import nn


def itm_head(hidden_size: int) -> nn.Linear:
    """Image-text matching: fused [CLS] (B, H) -> logits (B, 2); class 1 means "match"."""
    return nn.Linear(hidden_size, 2)


def mlp_head(hidden_size: int, num_classes: int) -> nn.Sequential:
    """The official ``cls_head``: Linear(H, H) -> ReLU -> Linear(H, C); keys ``0.*`` and ``2.*``."""
    return nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_classes))


def ta_head(hidden_size: int) -> nn.Linear:
    """Text assignment: fused [CLS] -> 3 classes (first image, second image, neither)."""
    return nn.Linear(hidden_size, 3)
