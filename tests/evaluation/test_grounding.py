"""Grounding: the official box scoring and IoU on hand-made cases, the stale-box rules, and Grad-CAM's capture."""

from __future__ import annotations

import math

import pytest
import torch

from albef.data.records import RefInfo
from albef.evaluation.gradcam import gradcam
from albef.evaluation.grounding import (
    compute_iou,
    proposal_scores,
    score_results,
    split_accuracy,
    upsample_map,
)
from albef.models import create_model, model_preset
from albef.models.albef import ALBEFRetrieval
from albef.models.attention_capture import capture_cross_attention, capture_vit_attention


def test_iou_uses_inclusive_pixels_and_a_strict_overlap_test() -> None:
    assert compute_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert compute_iou([0, 0, 10, 10], [0, 0, 10, 5]) == 0.5  # the hit threshold itself
    # pixels 0..9 against 8..17: columns 8 and 9 overlap, (9 - 8 + 1) * 10 = 20 of 200 - 20
    assert compute_iou([0, 0, 10, 10], [8, 0, 10, 10]) == pytest.approx(20 / 180)
    assert compute_iou([0, 0, 10, 10], [9, 0, 10, 10]) == 0.0  # one shared column: 9 < 9 is false
    assert compute_iou([5, 5, 1, 10], [5, 5, 1, 10]) == 0.0  # a 1-px-wide box has x1 == x2
    assert math.isnan(compute_iou([3, 3, 0, 12], [3, 3, 0, 12]))  # 0 / 0: the official code raises


def test_proposal_scores_truncate_corners_toward_zero() -> None:
    mask = torch.arange(1.0, 13.0).view(3, 4)  # rows 0..2, columns 0..3
    # [-0.6, 0.5, 2.2, 1.9]: int(-0.6) = 0 (floor would give -1: the last column only), rows int(0.5)=0 ..
    # int(2.4)=2, columns 0 .. int(1.6)=1 -> mask[0:2, 0:1] = 1 + 5 = 6, area 2.2 * 1.9
    scores = proposal_scores(
        mask, [[-0.6, 0.5, 2.2, 1.9], [1.0, 1.0, 2.0, 2.0], [2.0, 0.0, 0.0, 3.0]], alpha=0.5
    )
    assert scores[0] == pytest.approx(6 / (2.2 * 1.9) ** 0.5)
    assert scores[1] == pytest.approx((6 + 7 + 10 + 11) / 2.0)
    assert torch.isnan(scores[2])  # a zero-width box: 0 / 0


def _refs() -> tuple[dict[int, RefInfo], dict[int, tuple[int, int]], dict[str, list[list[float]]]]:
    refs = {
        1: RefInfo(1, 10, "val", (0.0, 0.0, 4.0, 4.0)),
        2: RefInfo(2, 20, "testA", (0.0, 0.0, 4.0, 4.0)),
        3: RefInfo(3, 10, "testB", (4.0, 4.0, 4.0, 4.0)),
    }
    sizes = {10: (8, 8), 20: (8, 8)}
    dets = {
        "10": [[0.0, 0.0, 4.0, 4.0], [4.0, 4.0, 4.0, 4.0]],
        "20": [[0.0, 0.0, 0.0, 4.0]],
    }  # image 20: degenerate
    return refs, sizes, dets


def test_a_result_without_a_positive_proposal_reuses_the_previous_box_or_misses() -> None:
    refs, sizes, dets = _refs()
    top_left = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    bottom_right = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    maps, ids = [top_left, top_left, bottom_right], [1, 2, 3]
    official = score_results(maps, ids, refs, sizes, dets)
    assert [r.proposal_index for r in official] == [0, -1, 1]
    assert official[1].stale_box and official[1].pred_box == [
        0.0,
        0.0,
        4.0,
        4.0,
    ]  # result 0's box, other image
    assert [r.correct for r in official] == [True, True, True]
    assert split_accuracy(official) == {"val_d": 1.0, "testA_d": 1.0, "testB_d": 1.0}
    corrected = score_results(maps, ids, refs, sizes, dets, stale="miss")
    assert corrected[1].pred_box is None and not corrected[1].correct
    assert split_accuracy(corrected)["testA_d"] == 0.0
    # first result without a positive proposal: the official code crashes; here it is a miss
    first = score_results([top_left, top_left], [2, 1], refs, sizes, dets)
    assert first[0].pred_box is None and not first[0].correct and first[1].correct


def test_upsampling_is_torch_bicubic_without_aligned_corners() -> None:
    cam = torch.rand(3, 3, generator=torch.Generator().manual_seed(0))
    up = upsample_map(cam, 7, 5)
    expected = torch.nn.functional.interpolate(
        cam.view(1, 1, 3, 3), size=(7, 5), mode="bicubic", align_corners=False
    )
    assert up.shape == (7, 5) and torch.equal(up, expected.squeeze())


# -- Grad-CAM ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> ALBEFRetrieval:
    torch.manual_seed(0)
    cfg = model_preset("albef_tiny")
    return create_model("retrieval", cfg).eval()  # type: ignore[return-value]


def _inputs(model: ALBEFRetrieval) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    res = model.visual_encoder.image_res
    images = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[101, 200, 201, 202, 0, 0], [101, 203, 204, 205, 206, 207]])
    return images, ids, (ids > 0).long()


def test_capture_leaves_the_forward_unchanged_and_the_fused_kernel_restored(model: ALBEFRetrieval) -> None:
    images, ids, mask = _inputs(model)
    layer = model.text_encoder.encoder.layer[model.text_encoder.fusion_layer].crossattention.self
    with torch.no_grad():
        text = model.encode_text(ids, mask)
        plain = model.fuse(text, model.visual_encoder(images))
        with capture_cross_attention(layer) as capture, capture_vit_attention(model.visual_encoder, 0) as vit:
            captured = model.fuse(text, model.visual_encoder(images))
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)
    assert capture.probs is not None and torch.allclose(capture.probs.sum(-1), torch.ones(()))
    assert vit.probs is not None and vit.probs.shape[-1] == model.visual_encoder.num_tokens
    assert "attend" not in vars(layer)  # the class's fused kernel again
    assert not model.visual_encoder.explicit_attention_blocks


def test_itm_gradcam_counts_padding_in_the_mean_and_keeps_no_parameter_grads(model: ALBEFRetrieval) -> None:
    images, ids, mask = _inputs(model)
    block = model.text_encoder.fusion_layer
    both = gradcam(model, images, ids, mask, "itm", block)
    # the first pair alone, without its two padding positions: the same map times 6/4
    alone = gradcam(model, images[:1], ids[:1, :4], mask[:1, :4], "itm", block)
    torch.testing.assert_close(both.maps[0] * 6 / 4, alone.maps[0], atol=1e-6, rtol=1e-4)
    assert (both.grad[0, :, 4:] == 0).all()  # padded rows get no gradient
    assert both.maps.shape == (2, 3, 3) and (both.maps >= 0).all()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="fusion layer"):
        gradcam(model, images, ids, mask, "itm", 0)
    itc = gradcam(model, images, ids, mask, "itc", 0)
    assert itc.maps.shape == (2, 3, 3) and itc.logits.shape == (2, 2)
