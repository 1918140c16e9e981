"""Retrieval evaluation building blocks: encode a split once, then rank by ITC similarity.

Texts are padded to ``max_length`` (30) with truncation, images take the test transform, as the official
evaluation (spec §5.1). The ITM re-ranking of the top k candidates builds on these features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from albef.data.collate import collate_images
from albef.data.datasets import RetrievalEvalImages, retrieval_eval_texts
from albef.data.loaders import build_loader
from albef.data.records import RetrievalEvalSet
from albef.data.tokenizer import TextTokenizer
from albef.data.transforms import build_test_transform
from albef.engine.precision import Precision
from albef.evaluation.metrics import retrieval_metrics
from albef.models.albef import ContrastiveALBEF


@dataclass
class RetrievalFeatures:
    """Everything the ranking stages need, computed once per split.

    Attributes:
        image_embeds: ViT tokens (N_i, 1 + N, D), or ``None`` when not kept (ITC only).
        image_feat: Normalised image features (N_i, E).
        text_states: Text-mode states (N_t, L, H), or ``None`` when not kept.
        text_mask: (N_t, L).
        text_feat: Normalised text features (N_t, E).
    """

    image_embeds: Tensor | None
    image_feat: Tensor
    text_states: Tensor | None
    text_mask: Tensor
    text_feat: Tensor


@torch.inference_mode()
def encode_texts(
    model: ContrastiveALBEF,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    precision: Precision,
    batch_size: int = 256,
    max_length: int = 30,
    keep_states: bool = True,
) -> tuple[Tensor | None, Tensor, Tensor]:
    """Text-mode states (N, L, H) or None, masks (N, L) and features (N, E), in batches."""
    states, masks, feats = [], [], []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer.encode(
            list(texts[start : start + batch_size]), padding="max_length", max_length=max_length
        )
        tokens = tokens.to(precision.device)
        with precision.autocast():
            enc = model.encode_text(tokens.input_ids, tokens.attention_mask)
        if keep_states:
            states.append(enc.states.float().cpu())
        masks.append(tokens.attention_mask.cpu())
        feats.append(enc.feat.float().cpu())
    return (torch.cat(states) if keep_states else None), torch.cat(masks), torch.cat(feats)


@torch.inference_mode()
def encode_images(
    model: ContrastiveALBEF, loader: Any, precision: Precision, keep_tokens: bool = True
) -> tuple[Tensor | None, Tensor]:
    """ViT tokens (N, 1+P, D) or None, and features (N, E), in loader order."""
    embeds, feats = [], []
    for batch in loader:
        with precision.autocast():
            enc = model.encode_image(batch.image.to(precision.device))
        if keep_tokens:
            embeds.append(enc.embeds.float().cpu())
        feats.append(enc.feat.float().cpu())
    return (torch.cat(embeds) if keep_tokens else None), torch.cat(feats)


def encode_split(
    model: ContrastiveALBEF,
    split: RetrievalEvalSet,
    image_root: str | Path,
    tokenizer: TextTokenizer,
    precision: Precision,
    image_res: int,
    batch_size: int = 64,
    text_batch_size: int = 256,
    max_length: int = 30,
    max_words: int = 30,
    keep_tokens: bool = True,
    num_workers: int = 0,
    source: str = "",
) -> RetrievalFeatures:
    """Encode every image and caption of a split (model in eval mode)."""
    was_training = model.training
    model.eval()
    dataset = RetrievalEvalImages(split, image_root, build_test_transform(image_res), source=source)
    loader = build_loader(dataset, batch_size, collate_images, train=False, num_workers=num_workers)
    image_embeds, image_feat = encode_images(model, loader, precision, keep_tokens)
    texts = retrieval_eval_texts(split, max_words)
    states, mask, text_feat = encode_texts(
        model, tokenizer, texts, precision, text_batch_size, max_length, keep_tokens
    )
    model.train(was_training)
    return RetrievalFeatures(image_embeds, image_feat, states, mask, text_feat)


def itc_similarity(features: RetrievalFeatures) -> Tensor:
    """The ITC matrix image_feat @ text_feat.T (N_i, N_t), without temperature (the official ranking)."""
    return features.image_feat @ features.text_feat.T


def itc_retrieval_metrics(features: RetrievalFeatures, split: RetrievalEvalSet) -> dict[str, float]:
    """Retrieval metrics of the ITC ranking alone (no ITM re-ranking)."""
    sims = itc_similarity(features)
    return retrieval_metrics(sims, sims.T, split.img2txt, split.txt2img)
