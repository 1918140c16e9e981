"""Grad-CAM maps of image-text pairs, as the official ``Grounding.val`` computes them (spec: the grounding
section of ``../shared/reference/README.md``).

- ``itm``: the cross-attention of text-encoder layer ``block_num`` (official default 8, the third fusion layer of
  12) during the full multimodal forward; the gradient of the ITM match logits' sum with respect to its
  attention probabilities, clamped at 0, times the probabilities, both zeroed on padded text rows, averaged over
  the heads and then over **every** text position ([CLS] and padding included, as the official code does: a
  map scales as 1/L of its batch's padded length).
- ``itc``: the [CLS]-to-patch attention of ViT block ``block_num`` and its gradient with respect to the sum of
  the batch's matched ITC similarities ``image_feat @ text_feat.T / temp`` (the diagonal), averaged over heads.

Maps are (B, g, g) over the patch grid, patch k at row k // g, column k % g. The gradient is taken with
``torch.autograd.grad`` with respect to the captured probabilities only: the same values as the official
``backward()``, without accumulating parameter gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from albef.models.albef import ContrastiveALBEF
from albef.models.attention_capture import capture_cross_attention, capture_vit_attention
from albef.models.bert import BertLayer

GradcamMode = Literal["itm", "itc"]
GRADCAM_MODES: tuple[str, ...] = ("itm", "itc")
DEFAULT_BLOCK = 8
"""The official ``block_num``: text-encoder layer 8 in ``itm`` mode (the third of the 6 fusion layers)."""


@dataclass
class Gradcam:
    """Maps (B, g, g) and what they were computed from.

    Attributes:
        maps: The Grad-CAM maps.
        probs: The captured attention probabilities (``itm``: (B, h, L, N); ``itc``: (B, h, N, N)).
        grad: Their gradient.
        logits: ``itm``: the ITM logits (B, 2); ``itc``: the similarity matrix (B, B).
        score: The back-propagated scalar.
    """

    maps: Tensor
    probs: Tensor
    grad: Tensor
    logits: Tensor
    score: Tensor


def patch_grid(model: ContrastiveALBEF) -> int:
    """g, the side of the ViT's square patch grid."""
    side = math.isqrt(model.visual_encoder.num_tokens - 1)
    if side * side != model.visual_encoder.num_tokens - 1:
        raise ValueError(f"the ViT's {model.visual_encoder.num_tokens - 1} patches are not a square grid")
    return side


def gradcam(
    model: ContrastiveALBEF,
    images: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    mode: str = "itm",
    block_num: int = DEFAULT_BLOCK,
) -> Gradcam:
    """Grad-CAM maps of the pairs ``(images[b], text b)`` (see the module docstring); the model's weights are
    not changed and no parameter gradient is kept."""
    if mode not in GRADCAM_MODES:
        raise ValueError(f"gradcam mode must be one of {', '.join(GRADCAM_MODES)}, got {mode!r}")
    with torch.inference_mode(False), torch.enable_grad():
        # tensors made under inference mode (a loader in the same thread) cannot enter autograd: copy them
        images, input_ids, attention_mask = (
            t.clone() if t.is_inference() else t for t in (images, input_ids, attention_mask)
        )
        if mode == "itm":
            return _itm(model, images, input_ids, attention_mask, block_num)
        return _itc(model, images, input_ids, attention_mask, block_num)


def _itm(model: ContrastiveALBEF, images: Tensor, ids: Tensor, mask: Tensor, block_num: int) -> Gradcam:
    encoder = model.text_encoder
    if not encoder.fusion_layer <= block_num < len(encoder.encoder.layer):
        raise ValueError(
            f"itm Grad-CAM needs a fusion layer: block_num must be in [{encoder.fusion_layer}, "
            f"{len(encoder.encoder.layer)}), got {block_num}"
        )
    layer: BertLayer = encoder.encoder.layer[block_num]  # type: ignore[assignment]
    assert layer.crossattention is not None
    batch, length, grid = ids.shape[0], ids.shape[1], patch_grid(model)
    with capture_cross_attention(layer.crossattention.self) as capture:
        image_embeds = model.visual_encoder(images)
        text = model.encode_text(ids, mask)
        logits = model.itm_logits(model.fuse(text, image_embeds))
        score = logits[:, 1].sum()
        assert capture.probs is not None
        (grad,) = torch.autograd.grad(score, capture.probs)
    probs = capture.probs.detach()
    heads = probs.shape[1]
    rows = mask.view(batch, 1, -1, 1, 1)
    cams = probs[..., 1:].reshape(batch, heads, length, grid, grid) * rows
    grads = grad[..., 1:].clamp(min=0).reshape(batch, heads, length, grid, grid) * rows
    maps = (cams * grads).mean(1).mean(1)
    return Gradcam(maps, probs, grad, logits.detach(), score.detach())


def _itc(model: ContrastiveALBEF, images: Tensor, ids: Tensor, mask: Tensor, block_num: int) -> Gradcam:
    batch, grid = images.shape[0], patch_grid(model)
    with capture_vit_attention(model.visual_encoder, block_num) as capture:
        embeds = model.visual_encoder(images)
        image_feat = F.normalize(model.vision_proj(embeds[:, 0]), dim=-1)
        text_feat = model.encode_text(ids, mask).feat
        sim = image_feat @ text_feat.T / model.temp
        score = sim.diag().sum()
        assert capture.probs is not None
        (grad,) = torch.autograd.grad(score, capture.probs)
    probs = capture.probs.detach()
    cam = probs[:, :, 0, 1:].reshape(batch, -1, grid, grid)
    grads = grad[:, :, 0, 1:].reshape(batch, -1, grid, grid).clamp(0)
    return Gradcam((cam * grads).mean(1), probs, grad, sim.detach(), score.detach())
