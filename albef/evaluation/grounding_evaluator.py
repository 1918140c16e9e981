"""The grounding evaluator: Grad-CAM of every referring expression, then the official box scoring.

Each batch of (image, expression) pairs gets its Grad-CAM maps (:func:`albef.evaluation.gradcam.gradcam`: a
forward and a backward pass, timed as ``gradcam``); the maps of every rank are gathered in split order and
scored against the proposals (:func:`albef.evaluation.grounding.score_results`, timed as ``box_scoring``). The
metrics are the official ``val_d``, ``testA_d`` and ``testB_d``, as percentages with bootstrap intervals over
the expressions of each split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from albef.data.records import RefInfo
from albef.engine.distributed import World, all_gather_object
from albef.engine.precision import Precision
from albef.evaluation.base import EvalResult, Evaluator
from albef.evaluation.bootstrap import percent_metric
from albef.evaluation.gradcam import gradcam
from albef.evaluation.grounding import DEFAULT_ALPHA, SPLITS, compute_iou, score_results
from albef.models.albef import ContrastiveALBEF
from albef.progress import track
from albef.reporting.measure import StageTimer


class GroundingEvaluator(Evaluator):
    """Weakly-supervised grounding on one split file (module docstring).

    Args:
        loader: Ordered batches (:class:`~albef.data.collate.GroundingBatch`) of this rank's expressions.
        refs: Every ref by id (ground-truth box, image, split).
        image_sizes: ``(height, width)`` by image id.
        dets: Proposals by string image id.
        precision: Device and autocast of the forward and backward passes.
        mode: ``itm`` or ``itc`` Grad-CAM.
        block: Its layer (:data:`albef.evaluation.gradcam.DEFAULT_BLOCK`).
        stale: What a result without a positive proposal gets (``official``: the previous box; ``miss``).
        world: This process's place in the job (maps are gathered from every rank).
        start: Position of this rank's first expression in the split.
    """

    task = "grounding"

    def __init__(
        self,
        loader: DataLoader[Any],
        refs: Mapping[int, RefInfo],
        image_sizes: Mapping[int, tuple[int, int]],
        dets: Mapping[str, Sequence[Sequence[float]]],
        precision: Precision,
        *,
        mode: str = "itm",
        block: int = 8,
        stale: str = "official",
        alpha: float = DEFAULT_ALPHA,
        world: World | None = None,
        start: int = 0,
    ) -> None:
        self.loader, self.refs, self.image_sizes, self.dets = loader, refs, image_sizes, dets
        self.precision, self.mode, self.block, self.stale, self.alpha = precision, mode, block, stale, alpha
        self.world, self.start = world or World(), start

    def run(self, model: nn.Module) -> EvalResult:
        inner = getattr(model, "module", model)
        if not isinstance(inner, ContrastiveALBEF):
            raise TypeError(f"grounding needs a retrieval model, got {type(inner).__name__}")
        was_training = inner.training
        inner.eval()
        timer = StageTimer(self.precision.device, warmup=1 if len(self.loader) > 1 else 0)
        maps: list[Tensor] = []
        ref_ids: list[int] = []
        try:
            for batch in track(self.loader, total=len(self.loader), desc="Grad-CAM"):
                ref_ids += batch.ref_id.tolist()
                batch = batch.to(self.precision.device, non_blocking=True)
                with (
                    timer.stage("gradcam", items=len(batch.ref_id), item="expression"),
                    self.precision.autocast(),
                ):
                    cam = gradcam(
                        inner,
                        batch.image,
                        batch.text.input_ids,
                        batch.text.attention_mask,
                        self.mode,
                        self.block,
                    )
                maps.extend(cam.maps.float().cpu())
        finally:
            inner.train(was_training)
        parts = sorted(all_gather_object((self.start, maps, ref_ids)), key=lambda part: part[0])
        maps = [m for part in parts for m in part[1]]
        ref_ids = [r for part in parts for r in part[2]]
        with timer.stage("box_scoring", items=max(1, len(ref_ids)), item="expression"):
            results = score_results(
                maps, ref_ids, self.refs, self.image_sizes, self.dets, self.alpha, self.stale
            )
        metrics = {}
        present = {r.split for r in results}
        for split in [s for s in SPLITS if s in present] + sorted(present - set(SPLITS)):
            hits = [float(r.correct) for r in results if r.split == split]
            metrics[f"{split}_d"] = percent_metric(hits)
        return EvalResult(
            metrics,
            n_samples=len(results),
            stages=timer.stats(),
            memory=timer.peak_memory(),
            outputs={"results": results, "maps": torch.stack(maps) if maps else torch.empty(0)},
            extra={
                "gradcam_mode": self.mode,
                "gradcam_block": self.block,
                "stale_rule": self.stale,
                "alpha": self.alpha,
                "stale_boxes": sum(r.stale_box for r in results),
                "chance": _chance(results, self.dets),
            },
        )


def _chance(results: Sequence[Any], dets: Mapping[str, Sequence[Sequence[float]]]) -> dict[str, float]:
    """Accuracy (percent) of picking one of each image's proposals uniformly at random, per split."""
    out: dict[str, list[float]] = {}
    for r in results:
        boxes = dets.get(str(r.image_id), [])
        hit = sum(compute_iou(r.gt_box, b) >= 0.5 for b in boxes) / len(boxes) if boxes else 0.0
        out.setdefault(f"{r.split}_d", []).append(hit)
    return {k: 100.0 * sum(v) / len(v) for k, v in out.items()}
