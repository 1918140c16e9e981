"""VQA: a question encoder with cross-attention to the image and a causal answer decoder.

The decoder is a BERT stack whose every layer cross-attends to the question states (the official
``BertLMHeadModel`` with ``fusion_layer=0``), initialised from the pretraining fusion layers. Answers are
ranked from a fixed answer list: top-k by first-token probability, then re-scored with the teacher-forced
sequence likelihood (:meth:`ALBEFVQA.rank_answers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from albef.models.bert import BertStack, MLMHead
from albef.models.momentum import copy_params, momentum_copy, momentum_update
from albef.models.vision import VisionEncoder

AnswerScoring = Literal["official", "sequence"]
"""``official``: log p(first token) + sequence log-likelihood (the first token counted twice, as the
released code; reproduces the paper). ``sequence``: the sequence log-likelihood alone (BLIP/LAVIS)."""


@dataclass
class RankedAnswers:
    """Top-k answers per question.

    Attributes:
        ids: Indices into the answer list (Q, k), best first.
        probs: Softmax over the k re-ranked scores (Q, k).
    """

    ids: Tensor
    probs: Tensor


class ALBEFVQA(nn.Module):
    """Image encoder, 12-layer question encoder, answer decoder with tied LM head, optional EMA teachers.

    Args:
        visual_encoder: The ViT.
        text_encoder: Question encoder (cross-attends to the image from ``fusion_layer`` on).
        text_decoder: Causal decoder stack whose layers all cross-attend to the question states.
        lm_head: Prediction head tied to the decoder's word embeddings.
        distill: Build EMA teachers of the three parts and the head.
        momentum: EMA coefficient (the official VQA model hard-codes 0.995).
    """

    momentum_names = ("visual_encoder", "text_encoder", "text_decoder", "lm_head")
    visual_encoder_m: VisionEncoder
    text_encoder_m: BertStack
    text_decoder_m: BertStack
    lm_head_m: MLMHead

    def __init__(
        self,
        visual_encoder: VisionEncoder,
        text_encoder: BertStack,
        text_decoder: BertStack,
        lm_head: MLMHead,
        distill: bool = True,
        momentum: float = 0.995,
    ) -> None:
        super().__init__()
        self.visual_encoder = visual_encoder
        self.text_encoder = text_encoder
        self.text_decoder = text_decoder
        self.lm_head = lm_head
        self.distill = distill
        self.momentum = momentum
        if distill:
            for name in self.momentum_names:
                setattr(self, name + "_m", momentum_copy(getattr(self, name)))
            self.lm_head_m.decoder.weight = self.text_decoder_m.embeddings.word_embeddings.weight

    def copy_params(self) -> None:
        """Set every teacher equal to its online module."""
        if self.distill:
            copy_params(self, self.momentum_names)

    def update_momentum(self) -> None:
        """One EMA step of every teacher."""
        if self.distill:
            momentum_update(self, self.momentum_names, self.momentum)

    def encode_question(self, image: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Question ids (B, Lq) with cross-attention to the image tokens -> question states (B, Lq, H)."""
        image_embeds = self.visual_encoder(image)
        return self.text_encoder.forward_multimodal(input_ids, attention_mask, image_embeds)

    def decoder_logits(
        self, answer_ids: Tensor, answer_mask: Tensor, question_states: Tensor, question_mask: Tensor
    ) -> Tensor:
        """Teacher-forced decoder logits (N, La, V) for answers (N, La) given question states (N, Lq, H)."""
        hidden = self.text_decoder.forward_multimodal(answer_ids, answer_mask, question_states, question_mask)
        return self.lm_head(hidden)

    def answer_nll(
        self,
        answer_ids: Tensor,
        answer_mask: Tensor,
        question_states: Tensor,
        question_mask: Tensor,
        pad_id: int,
    ) -> Tensor:
        """Per-sequence negative log-likelihood (N,) of tokens ``1..end`` (padding ignored)."""
        logits = self.decoder_logits(answer_ids, answer_mask, question_states, question_mask)[:, :-1]
        targets = answer_ids[:, 1:].masked_fill(answer_ids[:, 1:] == pad_id, -100)
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=-100)
        return nll.sum(dim=1)

    @torch.no_grad()
    def rank_answers(
        self,
        question_states: Tensor,
        question_mask: Tensor,
        answer_ids: Tensor,
        answer_mask: Tensor,
        k: int,
        pad_id: int,
        scoring: AnswerScoring = "official",
        chunk_size: int | None = None,
    ) -> RankedAnswers:
        """Rank the answer list for each question.

        Args:
            question_states: (Q, Lq, H).
            question_mask: (Q, Lq).
            answer_ids: Tokenised answer list (A, La), each ``[CLS] answer [SEP] [PAD]...``.
            answer_mask: (A, La).
            k: Candidates re-scored per question (clipped to A).
            pad_id: Padding token id (ignored in the likelihood).
            scoring: See :data:`AnswerScoring`.
            chunk_size: Max (question, candidate) rows per decoder call; ``None`` does all at once.

        Returns:
            :class:`RankedAnswers` with ``ids`` and ``probs`` of shape (Q, k).
        """
        num_q = question_states.shape[0]
        k = min(k, answer_ids.shape[0])
        start = answer_ids[:1, :1].expand(num_q, 1)  # the [CLS] (BOS) of every question
        first_logits = self.decoder_logits(start, torch.ones_like(start), question_states, question_mask)[
            :, 0
        ]
        first_probs = first_logits.softmax(dim=-1).index_select(1, answer_ids[:, 1])  # (Q, A)
        topk_probs, topk_ids = first_probs.topk(k, dim=1)
        cand_ids, cand_mask = answer_ids[topk_ids.flatten()], answer_mask[topk_ids.flatten()]  # (Q*k, La)
        # Row r scores candidate r % k of question r // k; each chunk gathers only its own question states,
        # so the (Q*k, Lq, H) repetition is never materialised.
        owner = torch.arange(cand_ids.shape[0], device=cand_ids.device) // k
        step = chunk_size or cand_ids.shape[0]
        nll = torch.cat(
            [
                self.answer_nll(
                    cand_ids[i : i + step],
                    cand_mask[i : i + step],
                    question_states[owner[i : i + step]],
                    question_mask[owner[i : i + step]],
                    pad_id,
                )
                for i in range(0, cand_ids.shape[0], step)
            ]
        ).view(num_q, k)
        scores = -nll
        if scoring == "official":
            scores = topk_probs.log() + scores
        probs, order = scores.softmax(dim=-1).topk(k, dim=1)
        return RankedAnswers(ids=topk_ids.gather(1, order), probs=probs)
