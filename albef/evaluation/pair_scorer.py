"""The batched ITM scorer of the re-rank step: many queries per fusion call, shared work done once.

The official evaluation (spec §5.1) runs the fusion layers once per query on its k candidates, with the
query's image (or the k candidate images) copied k times: :func:`~albef.evaluation.rerank.one_query_rerank` is that loop, on our
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
:data:`~albef.evaluation.rerank_layout.MIN_CALL_PAIRS`); padding rows and keys (zero rows, masked
keys) are how a bucket meets them. With that, in float32 on CPU, the scores
equal those of :func:`~albef.evaluation.rerank.one_query_rerank` **bit for bit**, with 1 or 2 threads and any call size (tests and
``benchmarks/bench_rerank.py`` check it), as long as k >= 16: with fewer candidates the official loop's own
products are that small (differences of ~1e-7). Under bf16/fp16 autocast they agree to its rounding only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from albef.evaluation.rerank_layout import MIN_CALL_PAIRS, MIN_ROWS, Bucket, CallLayout, CallPlan, plan_calls
from albef.evaluation.rerank_store import RerankFeatures
from albef.models.albef import ContrastiveALBEF
from albef.models.bert import BertLayer, MultiHeadAttention, padding_mask
from albef.progress import track
from albef.reporting.measure import StageTimer

SDPA_BLOCK_ROWS = 32
"""The smallest query block of PyTorch's CPU flash attention (32, 64 or 256 rows by query length): a query of
at most this many rows is a single block."""
PLAN_BLOCK = 65_536
"""Pairs planned at a time: their plans take some 30 MB of host and device memory at COCO's text lengths."""


def attend(module: MultiHeadAttention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """``module.attend`` (the model's own kernel choice) on head-split tensors (B, h, Lq, d) -> (B, h, Lq, d).

    Queries of fewer than :data:`MIN_ROWS` rows, or of more than :data:`SDPA_BLOCK_ROWS` rows and not a
    multiple of :data:`MIN_ROWS`, get zero rows, so that no row block of the kernel is a 1-3 row matrix product
    (another code path, other last bits) where the official forward has a longer one. The extra rows cost
    nothing worth measuring; they keep the scores bit-identical to the loop on CPU in float32.
    """
    rows = q.shape[-2]
    if rows < MIN_ROWS or (rows > SDPA_BLOCK_ROWS and rows % MIN_ROWS):
        padded = max(MIN_ROWS, -(-rows // MIN_ROWS) * MIN_ROWS)
        q = torch.cat([q, q.new_zeros(*q.shape[:-2], padded - rows, q.shape[-1])], dim=-2)
    return module.attend(q, k, v, mask)[..., :rows, :]


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

    :meth:`score` works in three phases. Setup: each text's first-fusion-layer self-attention (once per text)
    and the host-side plan of a block of calls (:func:`~albef.evaluation.rerank_layout.plan_calls`), copied to
    the device whole. Then the calls, with no host synchronisation: each gathers its rows on the device (or
    has them copied from pinned host memory on a side stream, ``residency="host"``), runs the fusion layers and
    writes its logits into a device buffer with ``index_copy_``. Last, one copy of the scores to the host.

    Args:
        model: The model (eval mode); its fusion layers follow ``fusion_layer`` in ``text_encoder``.
        image_embeds: Image tokens (N_i, S, Dv), any float dtype, any device.
        text_states: Text-mode states (N_t, L, H).
        text_mask: (N_t, L) prefix masks: every text is its first ``length`` tokens, [CLS] first.
        device: Where the fusion runs.
        autocast: Returns the autocast context of the run's precision.
        pairs_per_call: Pairs per fusion call (see :func:`albef.evaluation.memory_plan.plan_memory`).
        text_batch: Texts per call when the first fusion layer's self-attention is precomputed.
        timer: Times each fusion call as a stage ``itm_rerank`` (items: pairs), without synchronising.
        residency: ``device`` (features copied to the device once) or ``host`` (staged per call), see
            :mod:`albef.evaluation.rerank_store`.
        plan_block: Pairs planned at a time (bounds the memory of the plans).
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
        residency: str = "device",
        plan_block: int = PLAN_BLOCK,
    ) -> None:
        if pairs_per_call < 1:
            raise ValueError(f"pairs_per_call must be >= 1, got {pairs_per_call}")
        text_mask = text_mask.cpu()
        lengths = text_mask.sum(dim=1)
        prefix = torch.arange(text_mask.shape[1]) < lengths[:, None]
        if not bool((lengths > 0).all()) or not torch.equal(text_mask.bool(), prefix):
            raise ValueError(
                "text masks must be prefixes (the first tokens real, padding after) and non-empty"
            )
        self.model = model
        self.text_states = text_states
        self.text_mask = text_mask
        self.lengths = lengths
        self.device = device
        self.autocast = autocast
        self.pairs_per_call = pairs_per_call
        self.text_batch = text_batch
        self.timer = timer
        self.plan_block = plan_block
        encoder = model.text_encoder
        self.layers: list[BertLayer] = list(encoder.encoder.layer[encoder.fusion_layer :])  # type: ignore[arg-type]
        self.calls = 0
        # Each fusion layer's projections as the scorer applies them, one product for several outputs:
        # self-attention Q|K|V and K|V, cross-attention K|V (taken from the layer's modules once per scorer).
        self._qkv, self._kv, self._cross_kv = [], [], []
        for layer in self.layers:
            own, cross = layer.attention.self, layer.crossattention
            assert cross is not None, "fusion layers cross-attend"
            self._qkv.append(own.stacked("query", "key", "value"))
            self._kv.append(own.stacked("key", "value"))
            self._cross_kv.append(cross.self.stacked("key", "value"))
        # The texts' states after the first fusion layer's self-attention, filled in as texts are needed.
        home = device if residency == "device" else torch.device("cpu")
        self._prepared = torch.empty(text_states.shape, dtype=text_states.dtype, device=home)
        self._ready = torch.zeros(text_states.shape[0], dtype=torch.bool)
        flat = self._prepared.view(-1, self._prepared.shape[-1])
        self.features = RerankFeatures(image_embeds, flat, device, residency)

    @torch.inference_mode()
    def _prepare(self, text_idx: Tensor) -> None:
        """The first fusion layer's self-attention block on the texts not done yet (it does not depend on
        the image, so each text needs it once)."""
        todo = text_idx.unique()
        todo = todo[~self._ready[todo]]
        layer = self.layers[0]
        for start in range(0, todo.shape[0], self.text_batch):
            rows = todo[start : start + self.text_batch]
            states = self.text_states[rows.to(self.text_states.device)].to(self.device, torch.float32)
            mask = padding_mask(self.text_mask[rows].to(self.device), states.dtype)
            with self.autocast():
                block = layer.attention(states, states, mask)
            self._prepared[rows.to(self._prepared.device)] = block.to(
                self._prepared.device, self._prepared.dtype
            )
        self._ready[todo] = True

    @torch.inference_mode()
    def score(self, image_idx: Tensor, text_idx: Tensor) -> Tensor:
        """Match logits (P,) of the pairs ``(image_idx[p], text_idx[p])``, in the given order (float32, CPU)."""
        return self.score_on_device(image_idx, text_idx).cpu()

    @torch.inference_mode()
    def score_on_device(self, image_idx: Tensor, text_idx: Tensor) -> Tensor:
        """:meth:`score`, the result left on the device (float32) and nothing waited for."""
        image_idx, text_idx = image_idx.cpu(), text_idx.cpu()
        self._prepare(text_idx)
        order = torch.argsort(image_idx, stable=True)
        out = torch.empty(image_idx.shape[0], dtype=torch.float32, device=self.device)
        blocks = range(0, order.shape[0], self.plan_block)
        for start in track(blocks, total=len(blocks), desc="ITM re-rank", unit="block"):
            picked = order[start : start + self.plan_block]
            plans = plan_calls(
                image_idx, text_idx, picked, self.lengths, self.text_mask.shape[1], self.pairs_per_call
            )
            self.run_calls([(plan, plan.to(self.device)) for plan in plans], out)
        return out

    def run_calls(self, plans: list[tuple[CallPlan, CallPlan]], out: Tensor) -> None:
        """The fusion calls of planned ``(host, device)`` plans, scores into ``out``: no host synchronisation (the
        next call's rows are staged before this call computes, so a copy from the host overlaps compute)."""
        staged = self.features.stage(*plans[0]) if plans else None
        for n, (_, plan) in enumerate(plans):
            current = staged
            if n + 1 < len(plans):
                staged = self.features.stage(*plans[n + 1])
            stage = (
                contextlib.nullcontext()
                if self.timer is None
                else self.timer.unsynced_stage("itm_rerank", items=plan.pairs, item="pair")
            )
            with stage:
                assert current is not None
                tokens, states = current.ready()
                out.index_copy_(0, plan.picked, self._score_call(plan.layout, tokens, states).float())

    def _score_call(self, layout: CallLayout, tokens: Tensor, hidden: Tensor) -> Tensor:
        """One fusion call: image tokens (U, S, Dv) and the real text tokens (T, H) after the first layer's
        self-attention, pairs ordered by image -> match logits (P,)."""
        self.calls += 1
        with self.autocast():
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
        block = self.layers[n].attention
        own, width = block.self, hidden.shape[1]
        qkv = F.linear(pad_row(hidden), *self._qkv[n])  # (T + 1, 3H)
        context = hidden.new_empty(hidden.shape, dtype=qkv.dtype)  # bf16/fp16 under autocast
        for b in layout.texts:
            rows = b.gather(qkv).view(b.segments.shape[0], -1, 3 * width)
            q, k, v = (own.split_heads(x) for x in rows.split(width, dim=-1))
            b.scatter(context, own.merge_heads(attend(own, q, k, v, b.mask)).reshape(-1, width))
        return block.output(context, hidden)

    def _self_attention_cls(self, n: int, hidden: Tensor, layout: CallLayout) -> Tensor:
        """Self-attention block of the [CLS] rows only (P, H), attending to every token of their text."""
        block = self.layers[n].attention
        own, width = block.self, hidden.shape[1]
        kv = F.linear(pad_row(hidden), *self._kv[n])  # (T + 1, 2H)
        cls_hidden = hidden.index_select(0, layout.cls)
        query = own.query(cls_hidden)
        context = cls_hidden.new_empty(cls_hidden.shape, dtype=query.dtype)
        for b in layout.texts:
            count = b.segments.shape[0]
            rows = b.gather(kv).view(count, -1, 2 * width)
            k, v = (own.split_heads(x) for x in rows.split(width, dim=-1))
            q = own.split_heads(query.index_select(0, b.segments).view(count, 1, -1))
            context.index_copy_(0, b.segments, own.merge_heads(attend(own, q, k, v, b.mask))[:, 0])
        return block.output(context, cls_hidden)

    def _cross_attention(self, n: int, hidden: Tensor, buckets: list[Bucket], tokens: Tensor) -> Tensor:
        """Cross-attention block of ``hidden`` (the packed tokens, or the [CLS] rows): the rows of each image's
        texts are one query sequence on that image's keys and values, computed once per image."""
        block = self.layers[n].crossattention
        assert block is not None, "fusion layers cross-attend"
        own, width = block.self, hidden.shape[1]
        kv = project_images(self._cross_kv[n], tokens)  # (U, S, 2H)
        keys, values = (own.split_heads(x) for x in kv.split(width, dim=-1))  # (U, h, S, d)
        query = own.query(pad_row(hidden))
        context = hidden.new_empty(hidden.shape, dtype=query.dtype)
        for b in buckets:
            q = own.split_heads(b.gather(query).view(b.segments.shape[0], -1, width))
            k, v = keys.index_select(0, b.segments), values.index_select(0, b.segments)
            b.scatter(context, own.merge_heads(attend(own, q, k, v, None)).reshape(-1, width))
        return block.output(context, hidden)
