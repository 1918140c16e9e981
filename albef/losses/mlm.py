"""Masked language modelling with distillation from the momentum model (spec §2.3, §7 Q2/Q3).

Masking: each token is selected with probability ``p`` (Bernoulli per token, not an exact 15%), except
[PAD] and [CLS]; of the selected, 80% become [MASK], 10% a uniformly random id of the whole vocabulary
(special tokens included, as the official code), 10% stay. Random draws happen in the official order
(bernoulli p, bernoulli 0.8, bernoulli 0.5, randint), so the default generator reproduces the official masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from albef.losses.distill import soft_cross_entropy

IGNORE_INDEX = -100


@torch.no_grad()
def mask_tokens(
    input_ids: Tensor,
    vocab_size: int,
    mask_id: int,
    pad_id: int,
    cls_id: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Mask a batch of token ids for MLM.

    Args:
        input_ids: (B, L) token ids (left unchanged).
        vocab_size: Random replacements are drawn from ``[0, vocab_size)``.
        mask_id: The [MASK] id.
        pad_id: The [PAD] id (never masked).
        cls_id: The [CLS] id (never masked).
        probability: Selection probability per token.
        generator: Optional generator (``None``: the default generator, the official order).

    Returns:
        ``(masked_ids, labels)``: labels hold the original id where selected and -100 elsewhere.
    """
    ids = input_ids.clone()
    labels = input_ids.clone()
    device = ids.device
    selected = torch.bernoulli(torch.full(ids.shape, probability), generator=generator).bool().to(device)
    selected &= (ids != pad_id) & (ids != cls_id)
    labels[~selected] = IGNORE_INDEX
    replaced = torch.bernoulli(torch.full(ids.shape, 0.8), generator=generator).bool().to(device) & selected
    ids[replaced] = mask_id
    randomised = torch.bernoulli(torch.full(ids.shape, 0.5), generator=generator).bool().to(device)
    randomised &= selected & ~replaced
    random_words = torch.randint(vocab_size, ids.shape, dtype=torch.long, generator=generator).to(device)
    ids[randomised] = random_words[randomised]
    return ids, labels


def mlm_loss(
    logits: Tensor,
    labels: Tensor,
    teacher_logits: Tensor | None = None,
    alpha: float = 0.0,
    legacy_sequence_axis: bool = False,
) -> Tensor:
    """``(1 - alpha) * CE + alpha * soft-CE`` over the masked positions.

    Args:
        logits: Student logits (B, L, V).
        labels: (B, L) original ids at masked positions, -100 elsewhere.
        teacher_logits: Momentum-model logits (B, L, V), or ``None`` for plain CE.
        alpha: Distillation weight.
        legacy_sequence_axis: Take the student's log-softmax over the sequence axis, as the code that trained
            the released 2021 checkpoints did (fixed upstream in 2022, ALBEF#58).

    Returns:
        Scalar loss; 0 (with gradient graph intact) when nothing is masked, instead of NaN.
    """
    masked = labels != IGNORE_INDEX
    if not masked.any():
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits[masked].float(), labels[masked])
    if teacher_logits is None:
        return ce
    soft = F.softmax(teacher_logits.float(), dim=-1)
    if legacy_sequence_axis:
        distill = -(F.log_softmax(logits.float(), dim=1) * soft).sum(dim=-1)[masked]
    else:
        distill = soft_cross_entropy(logits[masked].float(), soft[masked], dim=-1)
    return (1 - alpha) * ce + alpha * distill.mean()
