"""The grounding report's figure: a few images with their Grad-CAM heat map, the chosen box and the true box."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from albef.data.datasets import resolve_image
from albef.data.images import load_image
from albef.data.records import GroundingRecord
from albef.evaluation.base import EvalResult
from albef.evaluation.grounding import upsample_map
from albef.fileio import atomic_write

PANELS = 8
"""Expressions shown: the first ones of the split, half hits and half misses where there are enough of each."""


def _chosen(results: list[Any]) -> list[int]:
    hits = [i for i, r in enumerate(results) if r.correct]
    misses = [i for i, r in enumerate(results) if not r.correct]
    half = PANELS // 2
    picked = hits[: max(half, PANELS - len(misses))] + misses[: max(half, PANELS - len(hits))]
    return sorted(picked[:PANELS])


def heatmap_figure(
    result: EvalResult, records: Sequence[GroundingRecord], image_root: Path, path: Path
) -> Path | None:
    """Draw up to :data:`PANELS` expressions of ``result`` (image, heat map, chosen box in red, true box in green,
    the expression as title) to ``path``; ``records`` are the split's expressions in result order. ``None``
    when the split has no result."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    results = result.outputs.get("results") or []
    if not results:
        return None
    root = image_root
    picked = _chosen(results)
    columns = min(4, len(picked))
    rows = -(-len(picked) // columns)
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for n, i in enumerate(picked):
        r, record = results[i], records[i]
        image = load_image(resolve_image(root, record.image))
        width, height = image.size
        heat = upsample_map(result.outputs["maps"][i], height, width)
        ax = figure.add_subplot(rows, columns, n + 1)
        ax.imshow(image)
        ax.imshow(torch.clamp(heat, min=0).numpy(), cmap="jet", alpha=0.45, extent=(0, width, height, 0))
        x, y, w, h = r.gt_box
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="lime", linewidth=2))
        if r.pred_box is not None:
            x, y, w, h = r.pred_box
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="red", linewidth=2, linestyle="--"))
        ax.set_title(f"{record.text[:40]}\n{'hit' if r.correct else 'miss'}, IoU {r.iou:.2f}", fontsize=8)
        ax.set_axis_off()
    figure.suptitle("Grad-CAM (heat), chosen proposal (red, dashed), ground truth (green)", fontsize=9)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
