"""The features of a retrieval split: encoding them once, their memory plan, and an on-disk cache of them.

**Memory plan** (:func:`plan_memory`), e.g. COCO-5k at 384 px with ViT-B/16 and BERT-base (N_i = 5,000,
S = 577 tokens of width 768, N_t = 25,010 texts of 30 tokens):

- image tokens 5,000 x 577 x 768: 8.25 GiB in float32, 4.13 GiB in bf16/fp16 (``feature_dtype``); they stay in
  host memory and each fusion call moves only its own images to the device;
- text states 25,010 x 30 x 768: 2.15 GiB (replaced by the first fusion layer's self-attention output);
- ITC matrix 5,000 x 25,010: 477 MiB; the two dense score matrices: 954 MiB; the top-k indices: 58 MiB;
- one fusion call: at most ``budget`` bytes, ``pairs_per_call = budget // pair_bytes`` with ``pair_bytes``
  an upper bound (every pair with its own image: its tokens, their keys and values, the text's
  activations and the attention scores), 6.74 MiB per pair at this size, so a 2 GiB budget gives 303 pairs.

A cache entry is keyed by a SHA-256 over everything the features depend on: the checkpoint's content
digest, the model config, the split's content (image paths, captions, links) and each image file's size and
modification time, and the encoding settings (resolution, text length, word limit, tokenizer, precision,
storage dtype, whether tokens are kept). Changing any of them is a miss. Entries are written atomically, so a
crash never leaves a half-written file that a later run would read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from albef.data.collate import collate_images
from albef.data.datasets import RetrievalEvalImages, resolve_image, retrieval_eval_texts
from albef.data.loaders import build_loader
from albef.data.records import RetrievalEvalSet
from albef.data.tokenizer import TextTokenizer
from albef.data.transforms import build_test_transform
from albef.engine.precision import Precision
from albef.fileio import atomic_torch_save
from albef.models.albef import ContrastiveALBEF
from albef.models.bert import BertLayer
from albef.progress import track
from albef.reporting.measure import StageTimer

FEATURE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
"""How image tokens and text states may be stored between encoding and re-ranking."""
DEFAULT_BUDGET_MB = 1024
"""Default memory budget of one fusion call."""
MAX_PAIRS_PER_CALL = 1024
"""Cap on the pairs of one fusion call, whatever the budget. With small models the budget allows far more, but
larger calls stop paying: at the tiny preset on one CPU thread, 1,024 pairs per call re-rank as fast as 512
(image->text 10 % faster, one call instead of two) and 2,048 are 20 % slower text->image (activations leave
the caches). With the base preset the 1 GiB budget binds first (293 pairs at 256 px, 151 at 384 px)."""

CACHE_FORMAT = 1
"""Bump when the stored layout or the meaning of a feature changes: older entries then miss."""

CacheStatus = Literal["disabled", "hit", "miss", "stale"]


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
@dataclass(frozen=True)
class MemoryPlan:
    """Bytes of each piece of a retrieval evaluation (see the module docstring for the COCO-5k numbers).

    Attributes:
        image_tokens: Stored image tokens (N_i, S, Dv) in the feature dtype.
        text_states: Stored text states (N_t, L, H) in the feature dtype.
        itc_matrix: The float32 ITC similarities (N_i, N_t).
        score_matrices: The two dense float32 score matrices.
        candidates: The int64 top-k indices of both directions.
        pair_bytes: Upper bound of one pair's share of a fusion call.
        pairs_per_call: Pairs per fusion call within the budget (at least 1, at most :data:`MAX_PAIRS_PER_CALL`).
        call_bytes: ``pairs_per_call * pair_bytes``.
    """

    image_tokens: int
    text_states: int
    itc_matrix: int
    score_matrices: int
    candidates: int
    pair_bytes: int
    pairs_per_call: int
    call_bytes: int

    def as_dict(self) -> dict[str, int]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class FusionDims:
    """The widths a memory plan needs: image-token width, hidden width, attention heads, feed-forward width."""

    vision_width: int
    hidden: int
    heads: int
    intermediate: int

    @classmethod
    def of(cls, model: ContrastiveALBEF) -> FusionDims:
        """The widths of ``model``."""
        layer: BertLayer = model.text_encoder.encoder.layer[-1]  # type: ignore[assignment]
        return cls(
            model.visual_encoder.embed_dim,
            model.text_proj.in_features,
            layer.attention.self.num_heads,
            layer.intermediate.dense.out_features,
        )


def plan_memory(
    dims: FusionDims,
    num_images: int,
    num_texts: int,
    image_tokens: int,
    k: int,
    text_len: int = 30,
    feature_dtype: str = "fp32",
    compute_bytes: int = 4,
    budget_mb: float = DEFAULT_BUDGET_MB,
    max_pairs: int = MAX_PAIRS_PER_CALL,
) -> MemoryPlan:
    """The memory plan of evaluating ``num_images`` x ``num_texts`` with a model of widths ``dims``.

    Args:
        dims: The model's widths (:meth:`FusionDims.of`).
        num_images: N_i.
        num_texts: N_t.
        image_tokens: S, tokens per image (``(res / patch)^2 + 1``).
        k: Candidates per query.
        text_len: L, the padded text length.
        feature_dtype: Storage of image tokens and text states (:data:`FEATURE_DTYPES`).
        compute_bytes: Bytes per element of the fusion activations (4 in float32, 2 under bf16 autocast).
        budget_mb: Memory budget of one fusion call in MiB.
        max_pairs: Cap on the pairs of one call.
    """
    store = FEATURE_DTYPES[feature_dtype].itemsize
    vision, hidden, heads, inner = dims.vision_width, dims.hidden, dims.heads, dims.intermediate
    # Every pair with its own image: tokens (float32 on the device), their keys and values; the text's
    # activations (about six H-wide tensors and the feed-forward hidden layer); the attention scores.
    image = image_tokens * vision * 4 + 2 * image_tokens * hidden * compute_bytes
    text = (
        text_len * (6 * hidden + inner) * compute_bytes + heads * text_len * max(image_tokens, text_len) * 4
    )
    pair = image + text
    pairs = max(1, min(max_pairs, int(budget_mb * 2**20) // pair))
    return MemoryPlan(
        image_tokens=num_images * image_tokens * vision * store,
        text_states=num_texts * text_len * hidden * store,
        itc_matrix=num_images * num_texts * 4,
        score_matrices=2 * num_images * num_texts * 4,
        candidates=(num_images * min(k, num_texts) + num_texts * min(k, num_images)) * 8,
        pair_bytes=pair,
        pairs_per_call=pairs,
        call_bytes=pairs * pair,
    )


# -- the cache ------------------------------------------------------------------------------------------------
def _image_stats(split: RetrievalEvalSet, image_root: str | Path) -> Iterator[str]:
    """``path size mtime_ns`` of each image file (``missing`` when it cannot be read)."""
    for image in split.images:
        path = resolve_image(image_root, image)
        try:
            stat = path.stat()
            yield f"{image}\0{stat.st_size}\0{stat.st_mtime_ns}"
        except OSError:
            yield f"{image}\0missing"


def data_fingerprint(split: RetrievalEvalSet, image_root: str | Path) -> str:
    """SHA-256 of a split's content and of its image files' sizes and modification times."""
    digest = hashlib.sha256()
    digest.update(json.dumps([split.images, split.texts, split.img2txt], ensure_ascii=False).encode())
    for line in _image_stats(split, image_root):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def cache_key(
    checkpoint_sha256: str, model_config: Mapping[str, Any], data: str, settings: Mapping[str, Any]
) -> str:
    """The entry key: SHA-256 of the checkpoint digest, model config, data fingerprint and encoding settings."""
    material = {
        "format": CACHE_FORMAT,
        "checkpoint": checkpoint_sha256,
        "model": model_config,
        "data": data,
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


class FeatureCache:
    """Retrieval features on disk, one file per key under ``directory``.

    Args:
        directory: Where the entries live (created on the first save).

    Attributes:
        status: What the last :meth:`load` found (``hit``, ``miss``, or ``stale`` for an entry that could not
            be used: unreadable, written under another key, or without the tokens a re-ranking needs).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.status: CacheStatus = "miss"

    def path(self, key: str) -> Path:
        """The entry file of ``key``."""
        return self.directory / f"retrieval-features-{key[:32]}.pt"

    def load(self, key: str, need_tokens: bool) -> RetrievalFeatures | None:
        """The cached features of ``key``, or ``None`` (a miss) when there is no usable entry."""
        path = self.path(key)
        self.status = "miss"
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            features = RetrievalFeatures.from_tensors(entry["tensors"])
            usable = entry["key"] == key and (features.has_tokens or not need_tokens)
        except Exception:  # an unreadable entry is a miss; the next save replaces it
            usable = False
        if not usable:
            self.status = "stale"
            return None
        self.status = "hit"
        return features

    def save(self, key: str, features: RetrievalFeatures) -> Path:
        """Write the entry of ``key`` atomically; returns its path."""
        return atomic_torch_save(
            {"key": key, "format": CACHE_FORMAT, "tensors": features.tensors()}, self.path(key)
        )
