"""ITC, ITM and ITM + ITC scores of a list of (image, caption) pairs, every distinct pair scored once.

A benchmark names its images and captions once each and the pairs it compares by index. The images and
captions are encoded once (:func:`~albef.evaluation.encode.encode_images`, :func:`~albef.evaluation.encode.encode_texts`),
the ITC score of a pair is the cosine of its features (the retrieval ranking score), and the ITM match logits of
the distinct pairs come from the batched re-rank scorer (:class:`~albef.evaluation.pair_scorer.PairScorer`: image
keys and values once per image, ragged text batches), the same code and speed as the retrieval re-rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from albef.data.tokenizer import TextTokenizer
from albef.engine.precision import Precision
from albef.evaluation.encode import encode_images, encode_texts
from albef.evaluation.memory_plan import FusionDims, plan_memory
from albef.evaluation.pair_scorer import PairScorer
from albef.models.albef import ContrastiveALBEF
from albef.reporting.measure import StageTimer


@dataclass
class PairScores:
    """Scores of the requested pairs, in request order (float32, CPU).

    Attributes:
        itc: (P,) cosine of the ITC image and text features.
        itm: (P,) the ITM head's match logit.
        pairs_scored: Distinct pairs the fusion encoder ran on (duplicates are scored once).
    """

    itc: Tensor
    itm: Tensor
    pairs_scored: int

    def of(self, scorer: str) -> Tensor:
        """The scores of ``scorer``: ``itc``, ``itm`` or ``itm_itc`` (their sum)."""
        if scorer == "itc":
            return self.itc
        if scorer == "itm":
            return self.itm
        if scorer == "itm_itc":
            return self.itm + self.itc
        raise ValueError(f"unknown scorer {scorer!r}; valid: itc, itm, itm_itc")


@torch.inference_mode()
def score_pairs(
    model: ContrastiveALBEF,
    image_loader: Any,
    texts: Sequence[str],
    image_idx: Tensor,
    text_idx: Tensor,
    tokenizer: TextTokenizer,
    precision: Precision,
    max_length: int = 30,
    text_batch_size: int = 256,
    timer: StageTimer | None = None,
) -> PairScores:
    """Score the pairs ``(image_idx[p], text_idx[p])``.

    Args:
        model: A model with ITC projections and an ITM head (pretraining, retrieval), in eval mode.
        image_loader: Ordered loader of the images (batches with ``.image``), image ``i`` at position ``i``.
        texts: The captions, already normalised (``pre_caption``).
        image_idx: (P,) image of each pair.
        text_idx: (P,) caption of each pair.
        tokenizer: The model's tokenizer.
        precision: Device and autocast of the run.
        max_length: Token length of the captions.
        text_batch_size: Captions per encoder batch.
        timer: Times ``image_encode``, ``text_encode`` and ``itm_rerank`` (items: pairs).
    """
    image_idx, text_idx = image_idx.long().cpu(), text_idx.long().cpu()
    if image_idx.shape != text_idx.shape or image_idx.dim() != 1:
        raise ValueError("image_idx and text_idx must be 1-D and of one length")
    was_training = model.training
    model.eval()
    try:
        embeds, image_feat = encode_images(model, image_loader, precision, keep_tokens=True, timer=timer)
        states, mask, text_feat = encode_texts(
            model, tokenizer, list(texts), precision, text_batch_size, max_length, timer=timer
        )
        assert embeds is not None and states is not None
        if image_idx.numel() and (
            int(image_idx.max()) >= embeds.shape[0] or int(text_idx.max()) >= len(texts)
        ):
            raise ValueError("a pair names an image or caption that was not given")
        itc = (image_feat[image_idx] * text_feat[text_idx]).sum(dim=1)
        pairs = torch.stack([image_idx, text_idx], dim=1)
        distinct, inverse = torch.unique(pairs, dim=0, return_inverse=True)
        per_image = int(torch.bincount(distinct[:, 0]).max()) if distinct.numel() else 1
        plan = plan_memory(
            FusionDims.of(model), embeds.shape[0], len(texts), embeds.shape[1], max(1, per_image),
            mask.shape[1], compute_bytes=2 if precision.autocast_dtype is not None else 4,
        )  # fmt: skip
        scorer = PairScorer(
            model, embeds, states, mask, precision.device, precision.autocast, plan.pairs_per_call,
            text_batch_size, timer,
        )  # fmt: skip
        itm = scorer.score(distinct[:, 0], distinct[:, 1])[inverse] if distinct.numel() else torch.empty(0)
    finally:
        model.train(was_training)
    return PairScores(itc.float(), itm.float(), int(distinct.shape[0]))
