"""Tests of ``albef.models`` on the ``albef_tiny`` preset, plus small helpers they share.

The helpers build tiny task models with a fixed seed and make tiny batches: texts are
``[CLS] words... [PAD]...`` with the reference fixtures' special ids (pad 0, cls 101, sep 102).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from albef.models import create_model, model_preset
from albef.models.bert import MultiHeadAttention

TASKS = ("pretrain", "retrieval", "vqa", "nlvr", "nlvr_pretrain", "ve")
PAD, CLS, SEP = 0, 101, 102
FIRST_WORD = 104


def tiny_model(task: str, seed: int = 0) -> nn.Module:
    """The ``albef_tiny`` model of ``task``, built after ``torch.manual_seed(seed)``, in eval mode."""
    torch.manual_seed(seed)
    return create_model(task, model_preset("albef_tiny")).eval()


def images(batch: int, seed: int = 0, res: int = 48) -> Tensor:
    """Standard-normal images (B, 3, res, res)."""
    return torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(seed))


def texts(lengths: list[int], pad_to: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Token ids and 0/1 mask (B, L): ``[CLS]`` then random words, padded with 0 to ``pad_to``.

    Args:
        lengths: Real tokens per text, [CLS] included.
        pad_to: Padded length (default: the longest); the words do not depend on it.
        seed: Seed of the words.
    """
    longest = max(lengths)
    length = pad_to or longest
    gen = torch.Generator().manual_seed(seed)
    words = torch.randint(FIRST_WORD, 1000, (len(lengths), longest), generator=gen)
    ids = torch.cat([words, words.new_zeros(len(lengths), length - longest)], dim=1)
    ids[:, 0] = CLS
    mask = (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


def set_fused(model: nn.Module, fused: bool) -> int:
    """Select SDPA (``True``) or the plain-math path in every BERT attention; returns how many were set."""
    attentions = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    for attention in attentions:
        attention.fused = fused
    return len(attentions)
