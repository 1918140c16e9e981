"""A stand-in for the official retrieval evaluation (``Retrieval.evaluation``, spec §5.1), on our weights.

It does the official work step by step, with the eager-attention modules of :mod:`_eager_baseline` (the code the
official ``xbert.py`` / ``vit.py`` were copied from):

1. texts in batches of 256, padded to 30 tokens, through the text layers (``mode='text'``): the full states W
   and ``z_T = normalize(text_proj(W[:, 0]))``;
2. images in batches of ``batch_size_test`` (64) through the ViT: the full tokens V and
   ``z_I = normalize(vision_proj(V[:, 0]))``;
3. ``S = z_I @ z_T.T``;
4. for every image row, ``S[i].topk(k)``, then one fusion call on the k texts ``W[topk]`` (padded to 30) with the
   image's tokens **repeated k times** (``V[i].repeat(k, 1, 1)``), ``itm_head(cls)[:, 1]``;
5. the same for every text row, on ``V[topk]`` and the text repeated k times.

Nothing is shared between queries and every attention is eager (matmul, softmax, matmul), as in the official
code. Projections and heads are our modules (single Linear layers, the same weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from _eager_baseline import Baseline
from torch import Tensor

from albef.models.albef import ContrastiveALBEF
from albef.models.bert import MASK_VALUE

TEXT_BATCH = 256
IMAGE_BATCH = 64


class OfficialRetrieval:
    """The official evaluation's steps on ``base`` (eager modules) and ``ours`` (projections, ITM head)."""

    def __init__(self, ours: ContrastiveALBEF, base: Baseline) -> None:
        self.ours, self.base = ours, base

    @torch.inference_mode()
    def encode_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Step 2: tokens V (N, S, D) and normalised features z_I (N, E), batches of 64."""
        tokens = torch.cat([self.base.vit.forward_features(b) for b in images.split(IMAGE_BATCH)])
        return tokens, F.normalize(self.ours.vision_proj(tokens[:, 0]), dim=-1)

    @torch.inference_mode()
    def encode_texts(self, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Step 1: states W (N, 30, H) of texts padded to 30 and normalised features z_T, batches of 256."""
        states = torch.cat(
            [
                self.base.text(input_ids=i, attention_mask=m).last_hidden_state
                for i, m in zip(input_ids.split(TEXT_BATCH), mask.split(TEXT_BATCH), strict=True)
            ]
        )
        return states, F.normalize(self.ours.text_proj(states[:, 0]), dim=-1)

    def fusion_itm(self, states: Tensor, mask: Tensor, image_tokens: Tensor) -> Tensor:
        """One official fusion call (``mode='fusion'``, extended masks) -> ITM match logits (B,)."""
        self_mask = (1.0 - mask[:, None, None, :].to(states.dtype)) * MASK_VALUE
        image_mask = image_tokens.new_zeros(image_tokens.shape[0], 1, 1, image_tokens.shape[1])
        fused = self.base.fusion(
            states,
            attention_mask=self_mask,
            encoder_hidden_states=image_tokens,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
        return self.ours.itm_head(fused[:, 0])[:, 1]

    @torch.inference_mode()
    def rerank_i2t(
        self, sims: Tensor, tokens: Tensor, states: Tensor, mask: Tensor, k: int, rows: Sequence[int]
    ) -> Tensor:
        """Step 4 on image ``rows``: top k texts of each, one fusion call each -> logits (n, k)."""
        out = []
        for i in rows:
            _, top = sims[i].topk(k)
            out.append(self.fusion_itm(states[top], mask[top], tokens[i].repeat(k, 1, 1)))
        return torch.stack(out)

    @torch.inference_mode()
    def rerank_t2i(
        self, sims_t: Tensor, tokens: Tensor, states: Tensor, mask: Tensor, k: int, rows: Sequence[int]
    ) -> Tensor:
        """Step 5 on text ``rows`` of ``sims.T``: top k images of each, one fusion call each -> logits (n, k)."""
        out = []
        for j in rows:
            _, top = sims_t[j].topk(k)
            out.append(self.fusion_itm(states[j].repeat(k, 1, 1), mask[j].repeat(k, 1), tokens[top]))
        return torch.stack(out)

    @torch.inference_mode()
    def itc_topk(self, image_feat: Tensor, text_feat: Tensor, k: int) -> Tensor:
        """Step 3 and the loops' ``topk`` of every row of both directions (their share of steps 4 and 5)."""
        sims = image_feat @ text_feat.T
        for row in sims:
            row.topk(k)
        for row in sims.T.contiguous():
            row.topk(k)
        return sims
