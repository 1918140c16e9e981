"""Weakly-supervised grounding (``grounding.pt``): Grad-CAM, box scoring and accuracy, the bare checkpoint.

The Grad-CAM rows run :func:`albef.evaluation.gradcam.gradcam` on the fixture's loader batches (the images
indexed as ``Grounding.val`` saw them, the official tokenizer's ids) and compare the captured attention, its
gradient, the logits or similarities, the back-propagated score and the maps. The ``grounding_eval`` rows run
:func:`albef.evaluation.grounding.score_results` on the official maps and compare every result's upsampled map,
proposal scores, chosen box, IoU and hit, and the accuracies, exactly where the fixture says so. Where the
official code crashes (a first result without a positive proposal; ``itc`` mode on a ViT block that does not
exist), the row records what we do instead.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from albef.checkpoint.convert import load_checkpoint
from albef.data.records import RefInfo
from albef.data.tokenizer import load_tokenizer
from albef.evaluation.gradcam import Gradcam, gradcam
from albef.evaluation.grounding import compute_iou, score_results, split_accuracy, upsample_map
from albef.models import create_model
from albef.models.albef import ALBEFRetrieval
from albef.verification.compare import CheckRow, Status, compare
from albef.verification.fixtures import model_config_from_fixture
from albef.verification.losses import comparison_row
from albef.verification.reference import FixtureContext, rows_check

MAP_ATOL, MAP_RTOL = 1e-5, 1e-4
"""The fixture README's recommended tolerances for maps, A, G, logits and scores."""


def _model(ctx: FixtureContext) -> ALBEFRetrieval:
    model = ctx.model
    assert isinstance(model, ALBEFRetrieval)
    return model


def _runs(ctx: FixtureContext, output: str, mode: str, block: int) -> list[Gradcam]:
    """Our Grad-CAM of each loader batch of the fixture."""

    def compute() -> list[Gradcam]:
        images = ctx.fixture.inputs["image"]
        return [
            gradcam(_model(ctx), images[b["image_index"]], b["input_ids"], b["attention_mask"], mode, block)
            for b in ctx.fixture.inputs["batches"]
        ]

    return ctx.memo(f"grounding.{output}", compute)


def _gradcam_rows(ctx: FixtureContext, output: str, mode: str) -> list[CheckRow]:
    ref = ctx.fixture.outputs[output]
    runs = _runs(ctx, output, mode, int(ref["block_num"]))
    rows = []
    second = "itm_logits" if mode == "itm" else "sim"
    for j, (run, batch) in enumerate(zip(runs, ref["batches"], strict=True)):
        for name, mine in (("A", run.probs), ("G", run.grad), (second, run.logits), ("score", run.score)):
            result = compare(mine, batch[name], MAP_ATOL, MAP_RTOL)
            rows.append(comparison_row(ctx, f"{output}.batch{j}.{name}", result, f"{mode} Grad-CAM capture"))
    maps = torch.cat([run.maps for run in runs])
    detail = f"{mode}, block {int(ref['block_num'])}: heads then text positions averaged as officially"
    rows.append(comparison_row(ctx, f"{output}.maps", compare(maps, ref["maps"], MAP_ATOL, MAP_RTOL), detail))
    ref_ids = torch.cat([b["ref_ids"] for b in ctx.fixture.inputs["batches"]])
    rows.append(comparison_row(ctx, f"{output}.ref_ids", compare(ref_ids, ref["ref_ids"]), "result order"))
    return rows


@rows_check("grounding", "gradcam_itm", covers=("gradcam_itm",))
def _gradcam_itm(ctx: FixtureContext) -> list[CheckRow]:
    """ITM Grad-CAM of fusion layer 8: the captured cross-attention, its gradient, the logits and the maps."""
    return _gradcam_rows(ctx, "gradcam_itm", "itm")


@rows_check("grounding", "gradcam_itc", covers=("gradcam_itc", "gradcam_itc_block0"))
def _gradcam_itc(ctx: FixtureContext) -> list[CheckRow]:
    """ITC Grad-CAM of ViT blocks 1 and 0: the [CLS]-to-patch attention, its gradient, the similarities."""
    return _gradcam_rows(ctx, "gradcam_itc", "itc") + _gradcam_rows(ctx, "gradcam_itc_block0", "itc")


@rows_check("grounding", "gradcam_itc_block8_error", covers=("gradcam_itc_block8_error",))
def _itc_block8(ctx: FixtureContext) -> list[CheckRow]:
    """``itc`` mode with block 8 on a 2-block ViT: an IndexError, officially and here (with a clearer message)."""
    expected = str(ctx.fixture.outputs["gradcam_itc_block8_error"]).split(":")[0]
    batch = ctx.fixture.inputs["batches"][0]
    images = ctx.fixture.inputs["image"][batch["image_index"]]
    try:
        gradcam(_model(ctx), images, batch["input_ids"], batch["attention_mask"], "itc", 8)
    except Exception as err:  # the row reports whatever was raised
        ok = type(err).__name__ == expected
        return [
            ctx.row(
                "gradcam_itc_block8_error", None, "pass" if ok else "fail", f"{type(err).__name__}: {err}"
            )
        ]
    return [
        ctx.row("gradcam_itc_block8_error", None, "fail", f"no error; the official code raises {expected}")
    ]


@rows_check("grounding", "tokenizer")
def _tokenizer(ctx: FixtureContext) -> list[CheckRow]:
    """Our tokenizer on the fixture's vocabulary gives the official ids of both batches ([CLS] text, no [SEP])."""
    inputs = ctx.fixture.inputs
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_text("\n".join(inputs["vocab"]) + "\n", encoding="utf-8")
        tokenizer = load_tokenizer(tmp)
    rows = []
    for j, batch in enumerate(inputs["batches"]):
        texts = [inputs["texts"][inputs["entries"][e]["text_index"]] for e in batch["entries"]]
        encoded = tokenizer.encode(texts, padding="longest")
        for name in ("input_ids", "attention_mask"):
            result = compare(getattr(encoded, name), batch[name])
            rows.append(
                comparison_row(ctx, f"tokenizer.batch{j}.{name}", result, "padding longest, no [SEP]")
            )
    return rows


def _eval_inputs(ctx: FixtureContext) -> dict[str, Any]:
    inputs = ctx.fixture.inputs
    refs = {
        int(r["ref_id"]): RefInfo(int(r["ref_id"]), int(r["image_id"]), r["split"], tuple(r["bbox"]))
        for r in inputs["refs"]
    }
    sizes = {int(i["image_id"]): (int(i["height"]), int(i["width"])) for i in inputs["images"]}
    return {"refs": refs, "image_sizes": sizes, "dets": inputs["dets"], "alpha": float(inputs["alpha"])}


@rows_check("grounding", "grounding_eval", covers=("grounding_eval",))
def _grounding_eval(ctx: FixtureContext) -> list[CheckRow]:
    """Box scoring of the official maps: upsampled maps, proposal scores, chosen boxes, IoUs, accuracies."""
    ref, maps = ctx.fixture.outputs["grounding_eval"], ctx.fixture.outputs["gradcam_itm"]
    args = _eval_inputs(ctx)
    results = score_results(list(maps["maps"]), maps["ref_ids"].tolist(), **args)
    rows = []
    for i, (mine, official) in enumerate(zip(results, ref["per_result"], strict=True)):
        image = args["image_sizes"][mine.image_id]
        up = upsample_map(maps["maps"][i], *image)
        rows.append(comparison_row(ctx, f"grounding_eval.{i}.upsampled_map", compare(up, ref["upsampled_maps"][i], MAP_ATOL, MAP_RTOL), "bicubic, align_corners=False"))  # fmt: skip
        scores = torch.tensor(mine.scores, dtype=torch.float32)
        same_nan = torch.equal(scores.isnan(), official["proposal_scores"].isnan())
        result = compare(
            scores.nan_to_num(-1.0), official["proposal_scores"].nan_to_num(-1.0), MAP_ATOL, MAP_RTOL
        )
        rows.append(comparison_row(ctx, f"grounding_eval.{i}.proposal_scores", result, "int() corners; NaN stays NaN") if same_nan else ctx.row(f"grounding_eval.{i}.proposal_scores", None, "fail", "NaN where the official has none, or the reverse"))  # fmt: skip
        exact = {
            "pred_box": mine.pred_box, "proposal_index": mine.proposal_index, "stale_box": mine.stale_box,
            "correct": mine.correct, "iou": mine.iou, "gt_box": mine.gt_box,
        }  # fmt: skip
        wanted = {k: official[k] for k in exact}
        ok = exact == wanted
        rows.append(ctx.row(f"grounding_eval.{i}.box", 0.0 if ok else None, "pass" if ok else "fail", f"{official.get('case', '')} exact" if ok else f"ours {exact}, official {wanted}"))  # fmt: skip
        rows.append(comparison_row(ctx, f"grounding_eval.{i}.max_score", compare(mine.max_score, float(official["max_score"]), MAP_ATOL, MAP_RTOL), "highest positive score"))  # fmt: skip
    accuracy = split_accuracy(results)
    ok = accuracy == dict(ref["accuracy"])
    rows.append(ctx.row("grounding_eval.accuracy", 0.0 if ok else None, "pass" if ok else "fail", f"{accuracy} (exact)"))  # fmt: skip
    rows.append(_stale_first(ctx, args))
    return rows


def _stale_first(ctx: FixtureContext, args: dict[str, Any]) -> CheckRow:
    """The official crash when the first result has no positive proposal: here that result is a miss."""
    ref, maps = ctx.fixture.outputs["grounding_eval"], ctx.fixture.outputs["gradcam_itm"]
    order = list(ref["stale_first_result_order"])
    results = score_results(
        [maps["maps"][i] for i in order], [int(maps["ref_ids"][i]) for i in order], **args
    )
    first = results[0]
    ok = first.pred_box is None and not first.correct and first.stale_box
    official = str(ref["stale_first_result_error"]).split(":")[0]
    detail = f"official {official}; ours: no box, a miss, the other results scored"
    return ctx.row("grounding_eval.stale_first_result", None, "pass" if ok else "fail", detail)


@rows_check("grounding", "compute_iou_table", covers=("compute_iou_table",))
def _iou_table(ctx: FixtureContext) -> list[CheckRow]:
    """The official ``computeIoU`` cases, exactly (a zero union is NaN here where the official code raises)."""
    rows = []
    for i, case in enumerate(ctx.fixture.outputs["compute_iou_table"]):
        mine = compute_iou(case["box1"], case["box2"])
        expected = float(case["iou"])
        ok = (math.isnan(mine) and math.isnan(expected)) or mine == expected
        note = case["error"] or f"{case['box1']} vs {case['box2']}"
        rows.append(ctx.row(f"compute_iou_table.{i}", 0.0 if ok else None, "pass" if ok else "fail", f"{mine} ({note})"))  # fmt: skip
    return rows


@rows_check("grounding", "checkpoint_bare", covers=("checkpoint_bare", "checkpoint_bare_loading"))
def _checkpoint_bare(ctx: FixtureContext) -> list[CheckRow]:
    """The released ``refcoco.pth`` form (no teachers, no queues) loads strictly; every tensor lands unchanged."""
    bare: dict[str, Tensor] = dict(ctx.fixture.outputs["checkpoint_bare"])
    cfg = model_config_from_fixture(ctx.fixture.config, "retrieval")
    model = create_model("retrieval", cfg)
    report = load_checkpoint(model, "retrieval", bare)
    reference, loaded = _model(ctx).state_dict(), model.state_dict()
    worst, bad = 0.0, []
    for key, value in loaded.items():
        if key.startswith("queue."):  # not in the file: freshly initialised
            continue
        top, dot, rest = key.partition(".")
        source = f"{top.removesuffix('_m')}{dot}{rest}"  # a teacher is copied from its online module
        diff = float((value.double() - reference[source].double()).abs().max()) if value.numel() else 0.0
        worst = max(worst, diff)
        if diff:
            bad.append(key)
    status: Status = "pass" if not bad else "fail"
    detail = "; ".join(report.notes[1:]) if not bad else f"{len(bad)} tensors differ, e.g. {bad[:3]}"
    official = ctx.fixture.outputs["checkpoint_bare_loading"]["grounding_py_bare"]
    return [ctx.row("checkpoint_bare", worst, status, f"{detail} (official Grounding.py: {official})")]
