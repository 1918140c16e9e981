"""Batched ITM re-ranking of retrieval candidates: many queries per fusion call, shared work done once.

The official evaluation (spec §5.1) runs the fusion layers once per query on its k candidates, with the
query's image (or the k candidate images) copied k times: :func:`one_query_rerank` is that loop, on our
model. :class:`PairScorer` scores any list of (image, text) pairs instead, ordered by image and cut into calls
of up to ``pairs_per_call`` pairs, and computes only what a pair needs:

- **cross-attention keys/values once per image** per call (a KV cache): the tokens of all the texts paired
  with an image are one query sequence on that image's keys and values;
- **the first fusion layer's self-attention once per text** (it does not depend on the image);
- **almost no work on padding**: projections, LayerNorms and feed-forward blocks run on the real tokens
  only; attention runs on ragged sequences batched in a few :class:`Bucket` s of similar lengths;
- **only the [CLS] row in the last layer's outputs** (the ITM head reads nothing else).

None of these is an approximation: rows of a matrix product do not depend on the other rows, padded keys get
an exactly zero attention weight (the -10000 mask underflows ``exp``), and the attention kernels are
batch-invariant. The kernels do round differently for very small shapes, so the scorer never gives them
one: query blocks of 1-3 rows, key rows shorter than a vector of 16 floats, matrix products of fewer than 16
rows (:data:`~albef.evaluation.rerank_layout.MIN_ROWS`, :data:`~albef.evaluation.rerank_layout.MIN_KEYS`,
:data:`MIN_CALL_PAIRS`); padding rows and keys (zero rows, masked
keys) are how a bucket meets them. With that, in float32 on CPU, the scores
equal those of :func:`one_query_rerank` **bit for bit**, with 1 or 2 threads and any call size (tests and
``benchmarks/bench_rerank.py`` check it), as long as k >= 16: with fewer candidates the official loop's own
products are that small (differences of ~1e-7). Under bf16/fp16 autocast they agree to its rounding only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from albef.evaluation.rerank_layout import MIN_ROWS, Bucket, CallLayout
from albef.models.albef import ContrastiveALBEF, TextEncoding
from albef.models.bert import (
    BertLayer,
    MultiHeadAttention,
    padding_mask,
    prefer_math_attention,
)
from albef.progress import track
from albef.reporting.measure import StageTimer

SDPA_BLOCK_ROWS = 32
"""The smallest query block of PyTorch's CPU flash attention (32, 64 or 256 rows by query length): a query of
at most this many rows is a single block."""
MIN_CALL_PAIRS = 16
"""Fewest pairs a call is cut down to: MKL's multi-threaded sgemm changes its summation order for matrices
of fewer than 12 rows (not a multiple of 4), which would make the [CLS]-row products differ in the last bit."""

Direction = Literal["i2t", "t2i"]
ScoreMode = Literal["itm", "itm+itc"]


# -- pairs and the official loop --------------------------------------------------------------------------
def query_pairs(direction: Direction, rows: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """(image, text) index pairs of query ``rows`` (n,) and their candidates (n, k), row-major."""
    k = candidates.shape[1]
    queries = rows.repeat_interleave(k)
    flat = candidates.reshape(-1)
    return (queries, flat) if direction == "i2t" else (flat, queries)


@torch.inference_mode()
def one_query_rerank(
    model: ContrastiveALBEF,
    image_embeds: Tensor,
    text_states: Tensor,
    text_mask: Tensor,
    candidates: Tensor,
    direction: Direction,
) -> Tensor:
    """The official re-rank loop: one fusion call per query on its k candidates (the baseline).

    Args:
        model: The model (eval mode).
        image_embeds: Image tokens (N_i, S, Dv).
        text_states: Text-mode states (N_t, L, H).
        text_mask: (N_t, L).
        candidates: (n, k) candidate indices of query rows ``0 .. n-1``.
        direction: ``i2t`` (rows are images, candidates texts) or ``t2i``.

    Returns:
        ITM match logits (n, k).
    """
    out = []
    for query, cand in enumerate(candidates):
        k = cand.shape[0]
        if direction == "i2t":
            text = TextEncoding(text_states[cand], text_mask[cand], text_states.new_zeros(0))
            images = image_embeds[query].expand(k, -1, -1)
        else:
            text = TextEncoding(
                text_states[query].expand(k, -1, -1), text_mask[query].expand(k, -1), text_states.new_zeros(0)
            )
            images = image_embeds[cand]
        out.append(model.itm_logits(model.fuse(text, images))[:, 1])
    return torch.stack(out)


# -- the batched scorer ---------------------------------------------------------------------------------------
def attend(module: MultiHeadAttention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """The attention kernel of ``module`` on head-split tensors (B, h, Lq, d) -> (B, h, Lq, d).

    It picks the kernel exactly as :meth:`MultiHeadAttention.forward` does (fused SDPA, or plain math on
    CPU in bf16/fp16), so the scores stay bit-identical to the model's own forward. Eval mode: no dropout.
    Queries of fewer than :data:`MIN_ROWS` rows, or of more than :data:`SDPA_BLOCK_ROWS` rows and not a multiple
    of :data:`MIN_ROWS`, get zero rows, so that no row block of the kernel is a 1-3 row matrix product (another
    code path, other bits) where the official forward has a longer one.
    """
    rows = q.shape[-2]
    if rows < MIN_ROWS or (rows > SDPA_BLOCK_ROWS and rows % MIN_ROWS):
        padded = max(MIN_ROWS, -(-rows // MIN_ROWS) * MIN_ROWS)
        q = torch.cat([q, q.new_zeros(*q.shape[:-2], padded - rows, q.shape[-1])], dim=-2)
    if mask is not None:
        mask = mask.to(q.dtype)
    if module.fused and not prefer_math_attention(q):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        scores = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
        out = (scores if mask is None else scores + mask).softmax(dim=-1) @ v
    return out[..., :rows, :]


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, L, H) -> (B, h, L, H/h)."""
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, h, L, d) -> (B, L, h*d)."""
    batch, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * dim)


def stacked(*linears: nn.Linear) -> tuple[Tensor, Tensor]:
    """Weight and bias of several linears applied as one: ``F.linear(x, *stacked(a, b))`` is
    ``cat([a(x), b(x)], -1)`` bit for bit (each output still sums over the same inputs in the same order)."""
    return torch.cat([m.weight.detach() for m in linears]), torch.cat([m.bias.detach() for m in linears])


@dataclass(frozen=True)
class LayerWeights:
    """The stacked projections of one fusion layer: self-attention Q|K|V and K|V, cross-attention K|V."""

    qkv: tuple[Tensor, Tensor]
    kv: tuple[Tensor, Tensor]
    cross_kv: tuple[Tensor, Tensor]

    @classmethod
    def of(cls, layer: BertLayer) -> LayerWeights:
        """The stacked weights of ``layer``."""
        own, cross = layer.attention.self, layer.crossattention
        assert cross is not None, "fusion layers cross-attend"
        return cls(
            stacked(own.query, own.key, own.value),
            stacked(own.key, own.value),
            stacked(cross.self.key, cross.self.value),
        )


def pad_row(x: Tensor) -> Tensor:
    """``x`` (R, W) with one zero row appended: the row that a bucket's padding positions read."""
    return torch.cat([x, x.new_zeros(1, x.shape[1])])


def project_images(weights: tuple[Tensor, Tensor], tokens: Tensor) -> Tensor:
    """``F.linear(tokens, *weights)`` for image tokens (U, S, Dv), on at least :data:`MIN_CALL_PAIRS` rows.

    Zero images are appended when ``U * S`` is smaller (a tiny model with a lone image): the extra rows do not
    change the others, and the product keeps the kernel, hence the bits, of a full-size call.
    """
    images, length = tokens.shape[:2]
    missing = math.ceil(MIN_CALL_PAIRS / length) - images
    if missing <= 0:
        return F.linear(tokens, *weights)
    return F.linear(torch.cat([tokens, tokens.new_zeros(missing, *tokens.shape[1:])]), *weights)[:images]


class PairScorer:
    """ITM match logits of arbitrary (image, text) pairs, batched with the shared work done once.

    Args:
        model: The model (eval mode); its fusion layers follow ``fusion_layer`` in ``text_encoder``.
        image_embeds: Image tokens (N_i, S, Dv), any float dtype, any device (moved per call).
        text_states: Text-mode states (N_t, L, H) (moved per call).
        text_mask: (N_t, L) prefix masks: every text is its first ``length`` tokens, [CLS] first.
        device: Where the fusion runs.
        autocast: Returns the autocast context of the run's precision.
        pairs_per_call: Pairs per fusion call (see :func:`albef.evaluation.retrieval.plan_memory`).
        text_batch: Texts per call when the first fusion layer's self-attention is precomputed.
        timer: Times each fusion call as a stage ``itm_rerank`` (items: pairs).
    """

    def __init__(
        self,
        model: ContrastiveALBEF,
        image_embeds: Tensor,
        text_states: Tensor,
        text_mask: Tensor,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        pairs_per_call: int = 512,
        text_batch: int = 256,
        timer: StageTimer | None = None,
    ) -> None:
        if pairs_per_call < 1:
            raise ValueError(f"pairs_per_call must be >= 1, got {pairs_per_call}")
        lengths = text_mask.sum(dim=1, keepdim=True)
        prefix = torch.arange(text_mask.shape[1], device=text_mask.device) < lengths
        if not bool((lengths > 0).all()) or not torch.equal(text_mask.bool(), prefix):
            raise ValueError(
                "text masks must be prefixes (the first tokens real, padding after) and non-empty"
            )
        self.model = model
        self.image_embeds = image_embeds
        self.text_states = text_states
        self.text_mask = text_mask
        self.device = device
        self.autocast = autocast
        self.pairs_per_call = pairs_per_call
        self.text_batch = text_batch
        self.timer = timer
        encoder = model.text_encoder
        self.layers: list[BertLayer] = list(encoder.encoder.layer[encoder.fusion_layer :])  # type: ignore[arg-type]
        self.calls = 0
        self._weights = [LayerWeights.of(layer) for layer in self.layers]
        self._prepared = torch.empty(0)
        self._ready = torch.zeros(text_states.shape[0], dtype=torch.bool)

    @torch.inference_mode()
    def _prepare(self, text_idx: Tensor) -> None:
        """The first fusion layer's self-attention block on the texts not done yet (it does not depend on
        the image, so each text needs it once)."""
        if not self._prepared.numel():
            self._prepared = torch.empty_like(self.text_states)
        todo = text_idx.unique()
        todo = todo[~self._ready[todo]]
        layer = self.layers[0]
        for start in range(0, todo.shape[0], self.text_batch):
            rows = todo[start : start + self.text_batch]
            states = self.text_states[rows].to(self.device, torch.float32)
            mask = padding_mask(self.text_mask[rows].to(self.device), states.dtype)
            with self.autocast():
                block = layer.attention(states, states, mask)
            self._prepared[rows] = block.to(self._prepared.device, self._prepared.dtype)
        self._ready[todo] = True

    @torch.inference_mode()
    def score(self, image_idx: Tensor, text_idx: Tensor) -> Tensor:
        """Match logits (P,) of the pairs ``(image_idx[p], text_idx[p])``, in the given order (float32, CPU)."""
        self._prepare(text_idx)
        order = torch.argsort(image_idx, stable=True)
        out = torch.empty(image_idx.shape[0], dtype=torch.float32)
        chunks = list(self._chunks(image_idx[order]))
        for chunk in track(chunks, desc="ITM re-rank", unit="call"):
            picked = order[chunk]
            stage = (
                contextlib.nullcontext()
                if self.timer is None
                else self.timer.stage("itm_rerank", items=picked.shape[0], item="pair")
            )
            with stage:
                out[picked] = self._score_call(image_idx[picked], text_idx[picked]).float().cpu()
        return out

    def _chunks(self, sorted_images: Tensor) -> Iterator[slice]:
        """Calls of about equal size (at most ``pairs_per_call``, plus a tail too small to stand alone), cut
        where the image changes unless that leaves a call of fewer than :data:`MIN_CALL_PAIRS` pairs."""
        total, start = sorted_images.shape[0], 0
        per_call = max(self.pairs_per_call, MIN_CALL_PAIRS)
        size = math.ceil(total / max(1, math.ceil(total / per_call))) if total else 0
        while start < total:
            end = min(start + size, total)
            if end < total and sorted_images[end - 1] == sorted_images[end]:
                cut = start + int(torch.searchsorted(sorted_images[start:end], sorted_images[end - 1]))
                end = cut if cut - start >= MIN_CALL_PAIRS else end
            if total - end < MIN_CALL_PAIRS:
                end = total
            yield slice(start, end)
            start = end

    def _score_call(self, image_idx: Tensor, text_idx: Tensor) -> Tensor:
        """One fusion call over pairs ordered by image -> match logits (P,)."""
        self.calls += 1
        distinct, counts = torch.unique_consecutive(image_idx, return_counts=True)
        tokens = self.image_embeds[distinct].to(self.device, torch.float32)
        layout = CallLayout.build(self.text_mask[text_idx].to(self.device), counts.to(self.device))
        states = self._prepared[text_idx].to(self.device, torch.float32)
        with self.autocast():
            # (T, H): the real tokens, after the first layer's self-attention
            hidden = states.reshape(-1, states.shape[-1]).index_select(0, layout.flat)
            last = len(self.layers) - 1
            for n, layer in enumerate(self.layers):
                if n == last:  # the ITM head reads the [CLS] row only
                    if n:
                        hidden = self._self_attention_cls(n, hidden, layout)
                    else:
                        hidden = hidden.index_select(0, layout.cls)
                    hidden = self._cross_attention(n, hidden, layout.image_cls, tokens)
                else:
                    hidden = self._self_attention(n, hidden, layout) if n else hidden
                    hidden = self._cross_attention(n, hidden, layout.images, tokens)
                hidden = layer.output(layer.intermediate(hidden), hidden)
            return self.model.itm_head(hidden)[:, 1]  # hidden: (P, H)

    def _self_attention(self, n: int, hidden: Tensor, layout: CallLayout) -> Tensor:
        """Self-attention block of fusion layer ``n`` on the packed tokens (T, H), texts batched by bucket."""
        block, width = self.layers[n].attention, hidden.shape[1]
        qkv = F.linear(pad_row(hidden), *self._weights[n].qkv)  # (T + 1, 3H)
        context = hidden.new_empty(hidden.shape, dtype=qkv.dtype)  # bf16/fp16 under autocast
        for b in layout.texts:
            rows = b.gather(qkv).view(b.segments.shape[0], -1, 3 * width)
            q, k, v = (split_heads(x, block.self.num_heads) for x in rows.split(width, dim=-1))
            b.scatter(context, merge_heads(attend(block.self, q, k, v, b.mask)).reshape(-1, width))
        return block.output(context, hidden)

    def _self_attention_cls(self, n: int, hidden: Tensor, layout: CallLayout) -> Tensor:
        """Self-attention block of the [CLS] rows only (P, H), attending to every token of their text."""
        block, width = self.layers[n].attention, hidden.shape[1]
        kv = F.linear(pad_row(hidden), *self._weights[n].kv)  # (T + 1, 2H)
        cls_hidden = hidden.index_select(0, layout.cls)
        query = block.self.query(cls_hidden)
        context = cls_hidden.new_empty(cls_hidden.shape, dtype=query.dtype)
        for b in layout.texts:
            count = b.segments.shape[0]
            rows = b.gather(kv).view(count, -1, 2 * width)
            k, v = (split_heads(x, block.self.num_heads) for x in rows.split(width, dim=-1))
            q = split_heads(query.index_select(0, b.segments).view(count, 1, -1), block.self.num_heads)
            context.index_copy_(0, b.segments, merge_heads(attend(block.self, q, k, v, b.mask))[:, 0])
        return block.output(context, cls_hidden)

    def _cross_attention(self, n: int, hidden: Tensor, buckets: list[Bucket], tokens: Tensor) -> Tensor:
        """Cross-attention block of ``hidden`` (the packed tokens, or the [CLS] rows): the rows of each image's
        texts are one query sequence on that image's keys and values, computed once per image."""
        block = self.layers[n].crossattention
        assert block is not None, "fusion layers cross-attend"
        heads, width = block.self.num_heads, hidden.shape[1]
        kv = project_images(self._weights[n].cross_kv, tokens)  # (U, S, 2H)
        keys, values = (split_heads(x, heads) for x in kv.split(width, dim=-1))  # (U, h, S, d)
        query = block.self.query(pad_row(hidden))
        context = hidden.new_empty(hidden.shape, dtype=query.dtype)
        for b in buckets:
            q = split_heads(b.gather(query).view(b.segments.shape[0], -1, width), heads)
            k, v = keys.index_select(0, b.segments), values.index_select(0, b.segments)
            b.scatter(context, merge_heads(attend(block.self, q, k, v, None)).reshape(-1, width))
        return block.output(context, hidden)


def rerank_queries(scorer: PairScorer, direction: Direction, rows: Tensor, candidates: Tensor) -> Tensor:
    """Match logits (n, k) of query ``rows`` (n,) against their ``candidates`` (n, k) through ``scorer``."""
    image_idx, text_idx = query_pairs(direction, rows, candidates)
    return scorer.score(image_idx, text_idx).view(candidates.shape)
