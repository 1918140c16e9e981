"""Run reports as CLIP_benchmark result files, so ``clip_benchmark build`` and the leaderboards that read its
results take our numbers.

CLIP_benchmark writes one flat JSON object per evaluation: ``dataset``, ``model``, ``pretrained``, ``task``,
``metrics`` and ``language``; ``clip_benchmark build`` turns a set of them into one CSV, a row each, the metrics
and every other top-level key as columns. Its metric names and units (fractions, not percent):

- ``zeroshot_retrieval``: ``image_retrieval_recall@K`` (a caption's image within the top K images; our
  ``img_rK``) and ``text_retrieval_recall@K`` (an image's caption within the top K captions; our ``txt_rK``);
- ``zeroshot_classification``: ``acc1`` (NLVR², SNLI-VE accuracy) and ``mean_per_class_recall`` (SNLI-VE's
  three classes);
- ``image_caption_selection``: ``acc``, the true caption scored above its negatives (SugarCrepe, ARO; the
  ITM scorer's accuracy, ``itc_acc`` / ``itm_itc_acc`` beside it).

The task names are CLIP_benchmark's own; whether the model was finetuned on the dataset is in ``albef_setting``,
and ``albef_*`` keys carry the split, the checkpoint's hash and the git revision (``build`` keeps them as
columns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from albef.reporting.schema import RunReport

RETRIEVAL_KS = (1, 5, 10)
DATASET_NAMES = {"coco": "mscoco_captions", "flickr30k": "flickr30k"}
"""Our dataset names -> CLIP_benchmark's (the others keep ours)."""


class NotExportable(ValueError):
    """A report whose task has no CLIP_benchmark counterpart (pretraining, VQA, grounding)."""


def clip_benchmark_metrics(report: RunReport) -> tuple[str, dict[str, float]]:
    """``(task, metrics)`` of a report in CLIP_benchmark's names and units (module docstring)."""
    values = {name: m.value / 100.0 for name, m in report.metrics.items() if m.group is None}
    if report.task == "retrieval":
        metrics = {}
        for k in RETRIEVAL_KS:
            if f"img_r{k}" in values:
                metrics[f"image_retrieval_recall@{k}"] = values[f"img_r{k}"]
            if f"txt_r{k}" in values:
                metrics[f"text_retrieval_recall@{k}"] = values[f"txt_r{k}"]
        return "zeroshot_retrieval", metrics
    if report.task in ("nlvr", "ve"):
        metrics = {"acc1": values["accuracy"]}
        per_class = [m.value / 100.0 for m in report.metrics.values() if m.group == "class"]
        if report.task == "ve" and per_class:
            metrics["mean_per_class_recall"] = sum(per_class) / len(per_class)
        return "zeroshot_classification", metrics
    if report.task in ("sugarcrepe", "aro"):
        head = "macro_accuracy" if "itm/macro_accuracy" in values else "accuracy"
        metrics = {"acc": values[f"itm/{head}"]}
        metrics.update(
            {f"{s}_acc": values[f"{s}/{head}"] for s in ("itc", "itm_itc") if f"{s}/{head}" in values}
        )
        return "image_caption_selection", metrics
    if report.task == "winoground":
        return "image_caption_selection", {
            f"{name}{'' if scorer == 'itm' else '_' + scorer}": values[f"{scorer}/{name}"]
            for scorer in ("itm", "itc", "itm_itc")
            for name in ("text_score", "image_score", "group_score")
            if f"{scorer}/{name}" in values
        }
    raise NotExportable(f"a {report.task} report has no CLIP_benchmark counterpart")


def clip_benchmark_result(
    report: RunReport, model: str = "albef", pretrained: str | None = None
) -> dict[str, Any]:
    """The CLIP_benchmark result object of ``report`` (``pretrained`` defaults to the checkpoint's file name)."""
    task, metrics = clip_benchmark_metrics(report)
    ckpt = report.checkpoint
    if pretrained is None:
        pretrained = Path(ckpt.path).name if ckpt is not None and ckpt.path else "random-init"
    return {
        "dataset": DATASET_NAMES.get(report.dataset, report.dataset),
        "model": model,
        "pretrained": pretrained,
        "task": task,
        "metrics": metrics,
        "language": "en",
        "albef_split": report.split,
        "albef_setting": "zero-shot" if report.extra.get("zero_shot") is True else "finetuned",
        "albef_checkpoint_sha256": (ckpt.sha256 or "") if ckpt is not None else "",
        "albef_git": report.environment.git or "",
    }
