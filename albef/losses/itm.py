"""Image-text matching with contrastive hard negatives (spec §2.2, §2.5, §7 Q6/Q7).

For each text a negative image, and for each image a negative text, is drawn from the batch with
probability ``softmax(sim)`` (online features against the momentum batch, divided by the temperature),
excluding the sample itself and, when image ids are given, every sample of the same image.

Rows without a valid negative: the official code crashes (``torch.multinomial`` on an all-zero row,
ALBEF#18) when every other sample of the local batch shows the same image. Our documented rule:

* a row whose valid entries all underflowed to probability 0 draws uniformly among its valid entries;
* a row with no valid entry at all gets no negative (index -1) and is left out of the ITM negatives, so a
  positive is never used as a negative and a batch of one image does not crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class NegativeSamples:
    """Drawn negatives; -1 marks a row without any valid negative.

    Attributes:
        image_for_text: (B,) index of the negative image for each text.
        text_for_image: (B,) index of the negative text for each image.
    """

    image_for_text: Tensor
    text_for_image: Tensor


def exclusion_mask(batch: int, idx: Tensor | None = None, device: torch.device | None = None) -> Tensor:
    """Entries that must never be drawn as negatives (B, B): the diagonal, or every same-image pair."""
    if idx is None:
        return torch.eye(batch, dtype=torch.bool, device=device)
    return idx.view(-1, 1) == idx.view(1, -1)


@torch.no_grad()
def negative_weights(sim: Tensor, exclude: Tensor) -> Tensor:
    """Sampling weights ``softmax(sim)`` over the batch columns (B, B), excluded entries set to 0."""
    return F.softmax(sim.float(), dim=1).masked_fill(exclude, 0.0)


def _fix_rows(weights: Tensor, exclude: Tensor) -> tuple[Tensor, Tensor]:
    """Uniform weights for rows whose valid entries all have zero mass; which rows have any valid entry."""
    has_valid = (~exclude).any(dim=1)
    dead = has_valid & (weights.sum(dim=1) <= 0)
    weights = torch.where(dead[:, None], (~exclude).float(), weights)
    return weights, has_valid


def _draw(weights: Tensor, exclude: Tensor, generator: torch.Generator | None) -> Tensor:
    weights, has_valid = _fix_rows(weights, exclude)
    out = torch.full((weights.shape[0],), -1, dtype=torch.long, device=weights.device)
    if has_valid.any():
        drawn = torch.multinomial(weights[has_valid], 1, generator=generator).squeeze(1)
        out[has_valid] = drawn
    return out


def _draw_in_order(weights: Tensor, exclude: Tensor) -> Tensor:
    """One ``multinomial(row, 1)`` call per row on the default generator, in the official order."""
    weights, has_valid = _fix_rows(weights, exclude)
    picks = [
        int(torch.multinomial(row, 1).item()) if ok else -1
        for row, ok in zip(weights, has_valid, strict=True)
    ]
    return torch.tensor(picks, dtype=torch.long, device=weights.device)


@torch.no_grad()
def sample_negatives(
    weights_t2i: Tensor,
    weights_i2t: Tensor,
    exclude: Tensor,
    generator: torch.Generator | None = None,
) -> NegativeSamples:
    """Draw one negative image per text and one negative text per image, one ``multinomial`` call per side.

    Args:
        weights_t2i: (B, B) weights over images for each text (from :func:`negative_weights`).
        weights_i2t: (B, B) weights over texts for each image.
        exclude: (B, B) boolean mask of forbidden entries (the same for both directions).
        generator: Optional generator of the draw.

    Returns:
        :class:`NegativeSamples`.
    """
    return NegativeSamples(_draw(weights_t2i, exclude, generator), _draw(weights_i2t, exclude, generator))


@torch.no_grad()
def sample_negatives_in_order(weights_t2i: Tensor, weights_i2t: Tensor, exclude: Tensor) -> NegativeSamples:
    """:func:`sample_negatives` as the official code draws: row by row on the default generator, images for
    texts first, so the indices equal the official ones for the same seed (what the reference checks inject;
    a :data:`Sampler`)."""
    return NegativeSamples(_draw_in_order(weights_t2i, exclude), _draw_in_order(weights_i2t, exclude))


Sampler = Callable[[Tensor, Tensor, Tensor], NegativeSamples]
"""``(weights_t2i, weights_i2t, exclude) -> NegativeSamples``: :func:`sample_negatives` or
:func:`sample_negatives_in_order`."""


def itm_loss(pos_logits: Tensor, neg_logits: Tensor) -> Tensor:
    """Cross-entropy over [positives (label 1); negatives (label 0)] (mean over all pairs).

    Args:
        pos_logits: ITM logits of the matching pairs (B, 2).
        neg_logits: ITM logits of the negative pairs (N, 2).

    Returns:
        Scalar loss.
    """
    logits = torch.cat([pos_logits, neg_logits])
    labels = torch.cat(
        [
            torch.ones(pos_logits.shape[0], dtype=torch.long, device=logits.device),
            torch.zeros(neg_logits.shape[0], dtype=torch.long, device=logits.device),
        ]
    )
    return F.cross_entropy(logits, labels)
