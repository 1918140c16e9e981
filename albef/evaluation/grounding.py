"""Box scoring and the accuracy of weakly-supervised grounding, as the official ``grounding_eval``.

For each result (a referring expression's Grad-CAM map over the patch grid):

1. the map is upsampled to the image's height x width with bicubic interpolation (``F.interpolate``,
   ``align_corners=False``: Keys a = -0.75, half-pixel centres, the edges clamped; values may overshoot below 0);
2. each proposal ``[x, y, w, h]`` of the image scores ``mask[int(y):int(y+h), int(x):int(x+w)].sum() /
   (w*h)**alpha`` (``alpha`` 0.5): the corners are truncated toward zero by ``int()``, not floored, and a negative
   start is a Python slice from the end, exactly as the official code indexes;
3. the first proposal with the highest score **above 0** is the prediction; a NaN score (a zero-area proposal)
   never wins;
4. IoU with the ground-truth box (:func:`compute_iou`, the official inclusive-pixel convention) >= ``0.5`` is a
   hit; accuracy per split (``val``, ``testA``, ``testB``) is hits / results, every result counted (duplicates
   too).

Where the official code misbehaves, the default reproduces its numbers and never crashes:

- **No proposal scores above 0** (all boxes empty, degenerate or on negative map values): the official code
  keeps the previous result's box, even from another image (``stale="official"``, the default); for the first
  result it crashes (``UnboundLocalError``), and here that result has no box and counts as a miss.
  ``stale="miss"`` is the corrected rule: such a result is always a miss.
- **A one-pixel overlap** gives IoU 0 (the strict ``<`` of the official test), and boxes 1 px wide have no
  area of intersection with themselves: kept, as the official numbers depend on it.
- **Zero-area boxes on both sides** divide by zero in the official code; here their IoU is NaN (a miss).
- A split without results has no accuracy (the official code divides by zero).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from albef.data.records import RefInfo

Box = Sequence[float]
StaleRule = Literal["official", "miss"]
STALE_RULES: tuple[str, ...] = ("official", "miss")
SPLITS = ("val", "testA", "testB")
"""RefCOCO+'s evaluation splits, in the order of the official ``eval_result`` (``val_d``, ``testA_d``, ``testB_d``)."""
DEFAULT_ALPHA = 0.5
IOU_THRESHOLD = 0.5


def compute_iou(box1: Box, box2: Box) -> float:
    """The official ``computeIoU`` of two ``[x, y, w, h]`` boxes: a box covers the pixels x .. x+w-1, an
    intersection exists only when ``x1 < x2`` and ``y1 < y2`` strictly; NaN when both areas are 0."""
    inter_x1, inter_y1 = max(box1[0], box2[0]), max(box1[1], box2[1])
    inter_x2 = min(box1[0] + box1[2] - 1, box2[0] + box2[2] - 1)
    inter_y2 = min(box1[1] + box1[3] - 1, box2[1] + box2[3] - 1)
    inter = 0.0
    if inter_x1 < inter_x2 and inter_y1 < inter_y2:
        inter = (inter_x2 - inter_x1 + 1) * (inter_y2 - inter_y1 + 1)
    union = box1[2] * box1[3] + box2[2] * box2[3] - inter
    return float(inter) / union if union else math.nan


def upsample_map(cam: Tensor, height: int, width: int) -> Tensor:
    """A (g, g) map upsampled to (height, width), bicubic, ``align_corners=False`` (the official ``mask``)."""
    grid = cam.shape[-1]
    return F.interpolate(
        cam.reshape(1, 1, grid, grid).float(), size=(height, width), mode="bicubic"
    ).squeeze()


def proposal_scores(mask: Tensor, proposals: Sequence[Box], alpha: float = DEFAULT_ALPHA) -> Tensor:
    """Each proposal's summed map over its truncated box divided by its area ** ``alpha`` (float32, NaN for a
    zero-area box)."""
    scores = []
    for x, y, w, h in (p[:4] for p in proposals):
        region = mask[int(y) : int(y + h), int(x) : int(x + w)]
        scores.append(region.sum() / (w * h) ** alpha)  # a zero area gives 0 / 0 = NaN, as officially
    return torch.stack(scores) if scores else torch.empty(0)


@dataclass
class GroundingResult:
    """One scored referring expression."""

    ref_id: int
    image_id: int
    split: str
    gt_box: list[float]
    pred_box: list[float] | None
    proposal_index: int
    """Index of the chosen proposal; -1 when none scored above 0."""
    stale_box: bool
    """The box is the previous result's (the official rule when no proposal scores above 0)."""
    max_score: float
    iou: float
    correct: bool
    scores: list[float] = field(default_factory=list)


def score_results(
    maps: Sequence[Tensor],
    ref_ids: Sequence[int],
    refs: Mapping[int, RefInfo],
    image_sizes: Mapping[int, tuple[int, int]],
    dets: Mapping[str, Sequence[Box]],
    alpha: float = DEFAULT_ALPHA,
    stale: str = "official",
    iou_threshold: float = IOU_THRESHOLD,
) -> list[GroundingResult]:
    """Score each result ``(maps[i], ref_ids[i])`` in order (module docstring).

    Args:
        maps: Grad-CAM maps (g, g), one per result.
        ref_ids: The ref of each result.
        refs: Every ref by id.
        image_sizes: ``(height, width)`` by image id.
        dets: Proposals by ``str(image_id)``; only ``det[:4]`` is read.
        alpha: The area exponent.
        stale: ``official`` (reuse the previous box) or ``miss``.
        iou_threshold: IoU for a hit (inclusive).
    """
    if stale not in STALE_RULES:
        raise ValueError(f"stale must be one of {', '.join(STALE_RULES)}, got {stale!r}")
    results: list[GroundingResult] = []
    previous: list[float] | None = None
    for cam, ref_id in zip(maps, ref_ids, strict=True):
        ref = refs[int(ref_id)]
        height, width = image_sizes[ref.image_id]
        proposals = dets.get(str(ref.image_id), [])
        scores = proposal_scores(upsample_map(cam, height, width), proposals, alpha)
        best, max_score = -1, 0.0
        for index, value in enumerate(scores.tolist()):
            if value > max_score:  # NaN never wins, nor a score <= 0
                best, max_score = index, value
        stale_box = best < 0
        pred: list[float] | None
        if best >= 0:
            pred = [float(v) for v in proposals[best][:4]]
        else:
            pred = previous if stale == "official" else None
        iou = compute_iou(ref.bbox, pred) if pred is not None else 0.0
        correct = pred is not None and iou >= iou_threshold
        previous = pred if best >= 0 else previous
        results.append(
            GroundingResult(
                int(ref_id), ref.image_id, ref.split, list(ref.bbox), pred, best, stale_box, max_score, iou,
                correct, scores.tolist(),
            )
        )  # fmt: skip
    return results


def split_accuracy(results: Sequence[GroundingResult]) -> dict[str, float]:
    """``{val_d, testA_d, testB_d}``: hits / results per split (fractions, the official keys); splits without
    results are left out, other splits are keyed ``<split>_d`` too."""
    counts: dict[str, list[int]] = {}
    for r in results:
        hits = counts.setdefault(r.split, [0, 0])
        hits[0] += int(r.correct)
        hits[1] += 1
    ordered = [s for s in SPLITS if s in counts] + sorted(set(counts) - set(SPLITS))
    return {f"{split}_d": counts[split][0] / counts[split][1] for split in ordered}


def as_records(results: Sequence[GroundingResult]) -> list[dict[str, Any]]:
    """JSON-ready dicts of the results (the report's per-result file)."""
    return [r.__dict__.copy() for r in results]
