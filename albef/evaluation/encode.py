"""Step 1 of a retrieval evaluation: encode the split's images and texts once (ViT tokens and ITC features,
text-mode states and features), in batches, kept on the host in the storage dtype of the settings."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
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
from albef.models.albef import ContrastiveALBEF
from albef.progress import track
from albef.reporting.measure import StageTimer


@dataclass
class RetrievalFeatures:
    """Everything the ranking stages need, computed once per split (on the CPU).

    Attributes:
        image_embeds: ViT tokens (N_i, 1 + N, D), or ``None`` when not kept (ITC only).
        image_feat: Normalised image features (N_i, E), float32.
        text_states: Text-mode states (N_t, L, H), or ``None`` when not kept.
        text_mask: (N_t, L).
        text_feat: Normalised text features (N_t, E), float32.
    """

    image_embeds: Tensor | None
    image_feat: Tensor
    text_states: Tensor | None
    text_mask: Tensor
    text_feat: Tensor

    @property
    def has_tokens(self) -> bool:
        """Whether the re-ranking inputs (image tokens and text states) were kept."""
        return self.image_embeds is not None and self.text_states is not None

    def tensors(self) -> dict[str, Tensor]:
        """The kept fields by name (what the cache stores)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> RetrievalFeatures:
        """Inverse of :meth:`tensors`."""
        return cls(
            tensors.get("image_embeds"),
            tensors["image_feat"],
            tensors.get("text_states"),
            tensors["text_mask"],
            tensors["text_feat"],
        )


# -- encoding -------------------------------------------------------------------------------------------------
def _stage(
    timer: StageTimer | None, name: str, items: int, item: str
) -> contextlib.AbstractContextManager[Any]:
    """``timer.stage(...)``, or a no-op context without a timer."""
    return contextlib.nullcontext() if timer is None else timer.stage(name, items=items, item=item)


@torch.inference_mode()
def encode_texts(
    model: ContrastiveALBEF,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    precision: Precision,
    batch_size: int = 256,
    max_length: int = 30,
    keep_states: bool = True,
    store_dtype: torch.dtype = torch.float32,
    timer: StageTimer | None = None,
) -> tuple[Tensor | None, Tensor, Tensor]:
    """Text-mode states (N, L, H) or None, masks (N, L) and features (N, E), in batches, on the CPU."""
    states, masks, feats = [], [], []
    for start in track(range(0, len(texts), batch_size), desc="encode texts"):
        batch = list(texts[start : start + batch_size])
        tokens = tokenizer.encode(batch, padding="max_length", max_length=max_length).to(precision.device)
        with _stage(timer, "text_encode", len(batch), "text"), precision.autocast():
            enc = model.encode_text(tokens.input_ids, tokens.attention_mask)
            feats.append(enc.feat.float().cpu())
            if keep_states:
                states.append(enc.states.to("cpu", store_dtype))
        masks.append(tokens.attention_mask.cpu())
    return (torch.cat(states) if keep_states else None), torch.cat(masks), torch.cat(feats)


@torch.inference_mode()
def encode_images(
    model: ContrastiveALBEF,
    loader: Any,
    precision: Precision,
    keep_tokens: bool = True,
    store_dtype: torch.dtype = torch.float32,
    timer: StageTimer | None = None,
) -> tuple[Tensor | None, Tensor]:
    """ViT tokens (N, 1+P, D) or None, and features (N, E), in loader order, on the CPU."""
    embeds, feats = [], []
    for batch in track(loader, total=len(loader), desc="encode images"):
        images = batch.image.to(precision.device)
        with _stage(timer, "image_encode", images.shape[0], "image"), precision.autocast():
            enc = model.encode_image(images)
            feats.append(enc.feat.float().cpu())
            if keep_tokens:
                embeds.append(enc.embeds.to("cpu", store_dtype))
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
    store_dtype: torch.dtype = torch.float32,
    timer: StageTimer | None = None,
) -> RetrievalFeatures:
    """Encode every image and caption of a split (the model runs in eval mode, then is restored)."""
    was_training = model.training
    model.eval()
    dataset = RetrievalEvalImages(split, image_root, build_test_transform(image_res), source=source)
    loader = build_loader(dataset, batch_size, collate_images, train=False, num_workers=num_workers)
    try:
        image_embeds, image_feat = encode_images(model, loader, precision, keep_tokens, store_dtype, timer)
        texts = retrieval_eval_texts(split, max_words)
        states, mask, text_feat = encode_texts(
            model, tokenizer, texts, precision, text_batch_size, max_length, keep_tokens, store_dtype, timer
        )
    finally:
        model.train(was_training)
    return RetrievalFeatures(image_embeds, image_feat, states, mask, text_feat)


# -- memory plan ----------------------------------------------------------------------------------------------
