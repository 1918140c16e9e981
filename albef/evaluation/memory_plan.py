"""How much memory the retrieval evaluation of a split takes, and how many pairs one fusion call may hold
(:func:`plan_memory`, :func:`call_budget`); how many (question, candidate) rows one VQA decoder call may hold
(:func:`rank_chunk_rows`).

:func:`plan_memory`, e.g. COCO-5k at 384 px with ViT-B/16 and BERT-base (N_i = 5,000, S = 577 tokens of width
768, N_t = 25,010 texts of 30 tokens):

- image tokens 5,000 x 577 x 768: 8.25 GiB in float32, 4.13 GiB in bf16/fp16 (``feature_dtype``); they stay in
  host memory and each fusion call moves only its own images to the device;
- text states 25,010 x 30 x 768: 2.15 GiB (replaced by the first fusion layer's self-attention output);
- ITC matrix 5,000 x 25,010: 477 MiB; the two dense score matrices: 954 MiB; the top-k indices: 58 MiB;
- one fusion call: at most ``budget`` bytes, ``pairs_per_call = budget // pair_bytes`` with ``pair_bytes``
  an upper bound (every pair with its own image: its tokens, their keys and values, the text's
  activations and the attention scores), 6.74 MiB per pair at this size, so a 2 GiB budget gives 303 pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from albef.models.albef import ContrastiveALBEF
from albef.models.bert import BertLayer
from albef.models.vqa import ALBEFVQA

FEATURE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
"""How image tokens and text states may be stored between encoding and re-ranking."""
DEFAULT_BUDGET_MB = 1024
"""Default memory budget of one fusion call."""
CUDA_BUDGET_SHARE = 0.25
"""On CUDA the default budget of one fusion call is this share of the device's free memory (within
[:data:`DEFAULT_BUDGET_MB`, :data:`CUDA_BUDGET_MAX_MB`]): the CPU's 1 GiB would cut an H100's calls small."""
CUDA_BUDGET_MAX_MB = 16 * 1024
"""Largest default budget of one fusion call on CUDA."""
CUDA_MAX_PAIRS_PER_CALL = 8192
"""Default cap on the pairs of one fusion call on CUDA (a GPU has no cache to fall out of; fewer, larger calls
launch fewer kernels)."""
MAX_PAIRS_PER_CALL = 1024
"""Cap on the pairs of one fusion call, whatever the budget. With small models the budget allows far more, but
larger calls stop paying: at the tiny preset on one CPU thread, 1,024 pairs per call re-rank as fast as 512
(image->text 10 % faster, one call instead of two) and 2,048 are 20 % slower text->image (activations leave
the caches). With the base preset the 1 GiB budget binds first (293 pairs at 256 px, 151 at 384 px)."""


def call_budget(
    device: torch.device, budget_mb: float | None = None, max_pairs: int | None = None
) -> tuple[float, int]:
    """The budget (MiB) and pair cap of one fusion call: as given, else the device's defaults (CPU:
    :data:`DEFAULT_BUDGET_MB` and :data:`MAX_PAIRS_PER_CALL`; CUDA: a share of the free memory and
    :data:`CUDA_MAX_PAIRS_PER_CALL`)."""
    if device.type != "cuda":
        return budget_mb or DEFAULT_BUDGET_MB, max_pairs or MAX_PAIRS_PER_CALL
    if budget_mb is None:
        free_mib = torch.cuda.mem_get_info(device)[0] / 2**20
        budget_mb = min(CUDA_BUDGET_MAX_MB, max(DEFAULT_BUDGET_MB, CUDA_BUDGET_SHARE * free_mib))
    return budget_mb, max_pairs or CUDA_MAX_PAIRS_PER_CALL


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


# -- VQA answer ranking ------------------------------------------------------------------------------------
DEFAULT_RANK_CHUNK = 2048
"""Most (question, candidate) rows per teacher-forced decoder call, whatever the memory budget allows: 16
questions x 128 candidates."""


def answer_row_bytes(model: ALBEFVQA, question_len: int, answer_len: int, compute_bytes: int = 4) -> int:
    """An upper bound of the memory one (question, candidate) row takes in a decoder call of ``model``.

    The vocabulary logits dominate (float32 logits and log-probabilities of every answer token: ~2.9 MB a row
    at the base size); then the question states gathered for the row and one layer's cross-attention keys
    and values, the answer's activations and the attention scores.
    """
    layer: BertLayer = model.text_decoder.encoder.layer[0]  # type: ignore[assignment]
    hidden, inner = layer.intermediate.dense.in_features, layer.intermediate.dense.out_features
    heads, vocab = layer.attention.self.num_heads, model.lm_head.decoder.out_features
    logits = answer_len * vocab * (compute_bytes + 8)
    question = 3 * question_len * hidden * compute_bytes
    answer = (
        answer_len * (6 * hidden + inner) * compute_bytes
        + heads * answer_len * max(answer_len, question_len) * 4
    )
    return logits + question + answer


def rank_chunk_rows(
    model: ALBEFVQA, question_len: int, answer_len: int, budget_mb: float, compute_bytes: int = 4, k: int = 1
) -> int:
    """(question, candidate) rows per decoder call within ``budget_mb`` (at least ``k``, one question's
    candidates; at most :data:`DEFAULT_RANK_CHUNK`)."""
    rows = int(budget_mb * 2**20) // answer_row_bytes(model, question_len, answer_len, compute_bytes)
    return max(k, min(DEFAULT_RANK_CHUNK, rows))
