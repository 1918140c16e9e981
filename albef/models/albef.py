"""The ALBEF core for the contrastive tasks: pretraining (ITC + ITM + MLM) and retrieval (ITC + ITM).

Both share the image/text encoders, the projections to the shared space, the ITM head, the learnable
temperature, EMA teachers and the feature queue. Methods return typed outputs; losses live in
``albef.losses``. Attribute names follow the official layout (``visual_encoder``, ``text_encoder``,
``vision_proj``, ...; teachers end in ``_m``) so checkpoint conversion is a renaming of prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from albef.models.bert import BertStack, MLMHead
from albef.models.heads import itm_head
from albef.models.momentum import FeatureQueue, copy_params, momentum_copy, momentum_update
from albef.models.vision import VisionEncoder


@dataclass
class ImageEncoding:
    """Image tokens and their ITC feature.

    Attributes:
        embeds: ViT output (B, 1 + N, Dv); index 0 is the image [CLS].
        feat: L2-normalised ``vision_proj`` of the [CLS] (B, E).
    """

    embeds: Tensor
    feat: Tensor


@dataclass
class TextEncoding:
    """Text-mode states and their ITC feature.

    Attributes:
        states: Output of layers ``[0, fusion_layer)`` (B, L, H).
        mask: 0/1 padding mask (B, L).
        feat: L2-normalised ``text_proj`` of the [CLS] (B, E).
    """

    states: Tensor
    mask: Tensor
    feat: Tensor


class ContrastiveALBEF(nn.Module):
    """Image encoder + text/fusion encoder + projections + ITM head + EMA teachers + queue.

    Args:
        visual_encoder: The ViT.
        text_encoder: The text/fusion BERT stack.
        embed_dim: Width of the shared ITC space.
        temp: Initial ITC temperature (similarities are divided by it).
        queue_size: Number of queued momentum features.
        momentum: EMA coefficient of the teachers.
        with_idx: Keep image ids in the queue (retrieval finetuning).
        distill: Mix the teachers' similarities into the ITC targets (the objectives read it; the teachers
            always exist, since the queues hold their features).
    """

    momentum_names: tuple[str, ...] = ("visual_encoder", "vision_proj", "text_encoder", "text_proj")
    visual_encoder_m: VisionEncoder
    vision_proj_m: nn.Linear
    text_encoder_m: BertStack
    text_proj_m: nn.Linear

    def __init__(
        self,
        visual_encoder: VisionEncoder,
        text_encoder: BertStack,
        embed_dim: int,
        temp: float,
        queue_size: int,
        momentum: float,
        with_idx: bool = False,
        distill: bool = True,
    ) -> None:
        super().__init__()
        self.distill = distill
        vision_width = visual_encoder.embed_dim
        text_width = text_encoder.embeddings.word_embeddings.embedding_dim
        self.visual_encoder = visual_encoder
        self.text_encoder = text_encoder
        self.vision_proj = nn.Linear(vision_width, embed_dim)
        self.text_proj = nn.Linear(text_width, embed_dim)
        self.itm_head = itm_head(text_width)
        self.temp = nn.Parameter(torch.tensor(float(temp)))
        self.momentum = momentum
        self.queue = FeatureQueue(embed_dim, queue_size, with_idx=with_idx)

    def init_teachers(self) -> None:
        """Create the frozen EMA copies; concrete models call it once every online module exists."""
        for name in self.momentum_names:
            setattr(self, name + "_m", momentum_copy(getattr(self, name)))

    def copy_params(self) -> None:
        """Set every teacher equal to its online module."""
        copy_params(self, self.momentum_names)

    def update_momentum(self) -> None:
        """One EMA step of every teacher (the official code does it at the start of a training forward)."""
        momentum_update(self, self.momentum_names, self.momentum)

    # -- online encoders ---------------------------------------------------------------------------------
    def encode_image(self, image: Tensor) -> ImageEncoding:
        """Images (B, 3, R, R) -> tokens (B, 1+N, Dv) and normalised features (B, E)."""
        embeds = self.visual_encoder(image)
        return ImageEncoding(embeds, F.normalize(self.vision_proj(embeds[:, 0]), dim=-1))

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextEncoding:
        """Token ids (B, L) -> text-mode states (B, L, H) and normalised features (B, E)."""
        states = self.text_encoder.forward_text(input_ids, attention_mask)
        return TextEncoding(states, attention_mask, F.normalize(self.text_proj(states[:, 0]), dim=-1))

    def fuse(self, text: TextEncoding, image_embeds: Tensor, image_mask: Tensor | None = None) -> Tensor:
        """Fusion layers on text-mode states, cross-attending to image tokens -> (B, L, H)."""
        return self.text_encoder.forward_fusion(text.states, text.mask, image_embeds, image_mask)

    def itm_logits(self, fused: Tensor) -> Tensor:
        """ITM logits (B, 2) from fused states (B, L, H); column 1 is "match"."""
        return self.itm_head(fused[:, 0])

    def similarity(self, image_feat: Tensor, text_feat: Tensor) -> tuple[Tensor, Tensor]:
        """ITC logits ``image_feat @ text_feat.T / temp`` (Bi, Bt) and its transpose direction (Bt, Bi)."""
        sim_i2t = image_feat @ text_feat.T / self.temp
        sim_t2i = text_feat @ image_feat.T / self.temp
        return sim_i2t, sim_t2i

    # -- momentum teachers ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_image_m(self, image: Tensor) -> ImageEncoding:
        """The teacher's image encoding (no gradient)."""
        embeds = self.visual_encoder_m(image)
        return ImageEncoding(embeds, F.normalize(self.vision_proj_m(embeds[:, 0]), dim=-1))

    @torch.no_grad()
    def encode_text_m(self, input_ids: Tensor, attention_mask: Tensor) -> TextEncoding:
        """The teacher's text encoding (no gradient)."""
        states = self.text_encoder_m.forward_text(input_ids, attention_mask)
        return TextEncoding(states, attention_mask, F.normalize(self.text_proj_m(states[:, 0]), dim=-1))


class ALBEFPretrain(ContrastiveALBEF):
    """Pretraining model: ITC + ITM + MLM; the MLM head is tied to the word embeddings (teacher too)."""

    momentum_names = (*ContrastiveALBEF.momentum_names, "mlm_head")
    mlm_head_m: MLMHead

    def __init__(
        self, visual_encoder: VisionEncoder, text_encoder: BertStack, mlm_head: MLMHead, **kwargs: object
    ) -> None:
        super().__init__(visual_encoder, text_encoder, **kwargs)  # type: ignore[arg-type]
        self.mlm_head = mlm_head
        self.init_teachers()
        # Keep the teacher's decoder tied to the teacher's embeddings, as in the official BertForMaskedLM twin.
        self.mlm_head_m.decoder.weight = self.text_encoder_m.embeddings.word_embeddings.weight

    def mlm_logits(self, input_ids: Tensor, attention_mask: Tensor, image_embeds: Tensor) -> Tensor:
        """Masked ids (B, L) through all layers with cross-attention to the image -> logits (B, L, V)."""
        hidden = self.text_encoder.forward_multimodal(input_ids, attention_mask, image_embeds)
        return self.mlm_head(hidden)

    @torch.no_grad()
    def mlm_logits_m(self, input_ids: Tensor, attention_mask: Tensor, image_embeds_m: Tensor) -> Tensor:
        """The teacher's MLM logits (B, L, V) on the teacher's image tokens."""
        hidden = self.text_encoder_m.forward_multimodal(input_ids, attention_mask, image_embeds_m)
        return self.mlm_head_m(hidden)


class ALBEFRetrieval(ContrastiveALBEF):
    """Retrieval model: ITC with image-id positives over batch + queue, and ITM re-ranking."""

    def __init__(self, visual_encoder: VisionEncoder, text_encoder: BertStack, **kwargs: object) -> None:
        kwargs.setdefault("with_idx", True)
        super().__init__(visual_encoder, text_encoder, **kwargs)  # type: ignore[arg-type]
        self.init_teachers()
