"""Classifiers on the fused [CLS]: NLVR² (two images), text assignment (TA) pretraining, SNLI-VE.

NLVR² and TA use an encoder with twice the fusion layers: each pretrained fusion layer becomes two
consecutive layers, the first attending to image 0 and the second to image 1, whose cross-attention key and
value projections are one shared module (:func:`share_cross_attention_kv`).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from albef.models.bert import AttentionBlock, BertLayer, BertStack
from albef.models.heads import mlp_head, ta_head
from albef.models.momentum import copy_params, momentum_copy, momentum_update
from albef.models.vision import VisionEncoder


def share_cross_attention_kv(stack: BertStack) -> None:
    """Make the cross-attention key/value of fusion layer ``F + 2j`` the modules of layer ``F + 2j + 1``."""
    first = stack.fusion_layer
    layers = [cast(BertLayer, layer) for layer in stack.encoder.layer]
    if (len(layers) - first) % 2:
        raise ValueError(
            f"a two-image encoder needs an even number of fusion layers, got {len(layers) - first}"
        )
    for i in range(first, len(layers), 2):
        a, b = layers[i].crossattention, layers[i + 1].crossattention
        assert isinstance(a, AttentionBlock) and isinstance(b, AttentionBlock)
        a.self.key = b.self.key
        a.self.value = b.self.value


class _MomentumClassifier(nn.Module):
    """Image encoder + multimodal text encoder + MLP head on [CLS], with optional EMA teachers."""

    momentum_names = ("visual_encoder", "text_encoder", "cls_head")
    visual_encoder_m: VisionEncoder
    text_encoder_m: BertStack
    cls_head_m: nn.Sequential

    def __init__(
        self,
        visual_encoder: VisionEncoder,
        text_encoder: BertStack,
        num_classes: int,
        distill: bool,
        momentum: float,
    ) -> None:
        super().__init__()
        self.visual_encoder = visual_encoder
        self.text_encoder = text_encoder
        self.cls_head = mlp_head(text_encoder.embeddings.word_embeddings.embedding_dim, num_classes)
        self.distill = distill
        self.momentum = momentum
        if distill:
            for name in self.momentum_names:
                setattr(self, name + "_m", momentum_copy(getattr(self, name)))

    def copy_params(self) -> None:
        """Set every teacher equal to its online module."""
        if self.distill:
            copy_params(self, self.momentum_names)

    def update_momentum(self) -> None:
        """One EMA step of every teacher."""
        if self.distill:
            momentum_update(self, self.momentum_names, self.momentum)


class ALBEFNLVR(_MomentumClassifier):
    """NLVR²: one ViT pass over both images, fusion alternating between them, 2-way head on [CLS]."""

    def __init__(
        self,
        visual_encoder: VisionEncoder,
        text_encoder: BertStack,
        distill: bool = True,
        momentum: float = 0.995,
    ) -> None:
        share_cross_attention_kv(text_encoder)
        super().__init__(visual_encoder, text_encoder, 2, distill, momentum)

    def logits(self, image0: Tensor, image1: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Image pairs (B, 3, R, R) x 2 and statements (B, L) -> logits (B, 2); class 1 is "True"."""
        embeds = self.visual_encoder(torch.cat([image0, image1]))
        first, second = embeds.split(image0.shape[0])
        hidden = self.text_encoder.forward_multimodal(input_ids, attention_mask, [first, second])
        return self.cls_head(hidden[:, 0])

    @torch.no_grad()
    def logits_m(self, image0: Tensor, image1: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The teacher's logits (B, 2)."""
        embeds = self.visual_encoder_m(torch.cat([image0, image1]))
        first, second = embeds.split(image0.shape[0])
        hidden = self.text_encoder_m.forward_multimodal(input_ids, attention_mask, [first, second])
        return self.cls_head_m(hidden[:, 0])


class ALBEFVE(_MomentumClassifier):
    """SNLI-VE: multimodal [CLS] -> 3 classes (0 contradiction, 1 neutral, 2 entailment)."""

    def __init__(
        self,
        visual_encoder: VisionEncoder,
        text_encoder: BertStack,
        distill: bool = True,
        momentum: float = 0.995,
    ) -> None:
        super().__init__(visual_encoder, text_encoder, 3, distill, momentum)

    def logits(self, image: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Images (B, 3, R, R) and hypotheses (B, L) -> logits (B, 3)."""
        hidden = self.text_encoder.forward_multimodal(input_ids, attention_mask, self.visual_encoder(image))
        return self.cls_head(hidden[:, 0])

    @torch.no_grad()
    def logits_m(self, image: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The teacher's logits (B, 3)."""
        hidden = self.text_encoder_m.forward_multimodal(
            input_ids, attention_mask, self.visual_encoder_m(image)
        )
        return self.cls_head_m(hidden[:, 0])


class ALBEFTextAssignment(nn.Module):
    """Text-assignment pretraining for NLVR²: which of two images (or neither) a caption describes.

    The projections and ``temp`` only serve the no-grad image-image similarity that picks image partners
    (the official model keeps ``temp`` at 0.07 and never trains it). No EMA teachers.
    """

    def __init__(
        self, visual_encoder: VisionEncoder, text_encoder: BertStack, embed_dim: int, temp: float = 0.07
    ) -> None:
        super().__init__()
        share_cross_attention_kv(text_encoder)
        width = text_encoder.embeddings.word_embeddings.embedding_dim
        self.visual_encoder = visual_encoder
        self.text_encoder = text_encoder
        self.vision_proj = nn.Linear(visual_encoder.embed_dim, embed_dim)
        self.text_proj = nn.Linear(width, embed_dim)
        self.temp = nn.Parameter(torch.tensor(float(temp)))
        self.ta_head = ta_head(width)

    def logits(self, first: Tensor, second: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Image tokens of the first/second image (B, 1+N, D) and captions (B, L) -> logits (B, 3)."""
        hidden = self.text_encoder.forward_multimodal(input_ids, attention_mask, [first, second])
        return self.ta_head(hidden[:, 0])
