"""The compositionality metrics as their papers define them, as pure functions of score tensors.

Every benchmark compares scores of (image, caption) pairs from one scorer (:data:`SCORERS`):

- **Winoground** (Thrush et al. 2022): ``s`` is (N, 2, 2) indexed ``[caption, image]``. The *text* score asks each
  image to prefer its own caption, ``s[0,0] > s[1,0]`` and ``s[1,1] > s[0,1]``; the *image* score asks each
  caption to prefer its own image, ``s[0,0] > s[0,1]`` and ``s[1,1] > s[1,0]``; the *group* score needs both.
  Chance: 25 %, 25 %, 16.67 %. A tie fails (the paper's strict ``>``).
- **SugarCrepe** (Hsieh et al. 2023): an example is right when its positive caption scores strictly higher than
  its hard negative (the release's ``pos_score > neg_score``); accuracy per subset and their macro average.
- **ARO** (Yuksekgonul et al. 2023): the official code takes the ``argmax`` over the caption options in its own
  order, which settles a tie on the first option. VG-Relation and VG-Attribution list the false caption first,
  so a tie is wrong; COCO-Order and Flickr30K-Order list the true caption first, so a tie is right.
  VG-Relation's headline is the macro accuracy over relations (the paper leaves out a list of relations whose
  two orders mean the same, given by ``data.excluded_relations``); VG-Attribution's is the macro accuracy over the
  attribute pairs with at least 25 examples; the Order sets report precision@1 over all examples.

Tensors are float scores; outcomes are boolean tensors, one per example.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from torch import Tensor

SCORERS = ("itc", "itm", "itm_itc")
"""``itc``: the cosine of the ITC features (the retrieval ranking score); ``itm``: the ITM head's match logit;
``itm_itc``: their sum, as BLIP's re-ranked retrieval adds the ITC similarity to the ITM score."""
SCORER_NAMES = {"itc": "ITC", "itm": "ITM", "itm_itc": "ITM + ITC"}
WINOGROUND_CHANCE = {"text_score": 25.0, "image_score": 25.0, "group_score": 100.0 / 6.0}
ARO_MIN_ATTRIBUTE_EXAMPLES = 25
"""VG-Attribution's macro average counts the attribute pairs with at least this many examples (as ARO)."""


def winoground_outcomes(scores: Tensor) -> dict[str, Tensor]:
    """Per-example text, image and group outcomes of Winoground scores (N, 2, 2) ``[caption, image]``."""
    if scores.dim() != 3 or tuple(scores.shape[1:]) != (2, 2):
        raise ValueError(f"expected scores of shape (N, 2, 2), got {tuple(scores.shape)}")
    c0i0, c1i0, c0i1, c1i1 = scores[:, 0, 0], scores[:, 1, 0], scores[:, 0, 1], scores[:, 1, 1]
    text = (c0i0 > c1i0) & (c1i1 > c0i1)
    image = (c0i0 > c0i1) & (c1i1 > c1i0)
    return {"text_score": text, "image_score": image, "group_score": text & image}


def contrast_outcomes(scores: Tensor, ties_win: bool = False) -> Tensor:
    """Per-example: whether the true caption (column 0) beats every other one of ``scores`` (N, C).

    Args:
        scores: (N, C) scores, the true caption first.
        ties_win: A tie with the best negative counts as right (ARO's Order sets, whose official option order
            puts the true caption first) instead of wrong (SugarCrepe, ARO's VG sets, Winoground).
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"expected scores of shape (N, C >= 2), got {tuple(scores.shape)}")
    best_negative = scores[:, 1:].max(dim=1).values
    return scores[:, 0] >= best_negative if ties_win else scores[:, 0] > best_negative


def macro_groups(groups: Sequence[str], excluded: Sequence[str] = (), min_count: int = 1) -> list[bool]:
    """Which examples a macro average counts: those of groups not ``excluded`` with at least ``min_count``
    examples."""
    sizes = Counter(groups)
    left_out = set(excluded)
    return [g not in left_out and sizes[g] >= min_count for g in groups]
