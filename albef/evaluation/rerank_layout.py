"""The plan of a re-rank: which pairs each fusion call scores and where their tokens go, worked out on the host.

:func:`plan_calls` cuts pairs ordered by image into calls (:func:`call_slices`) and gives each a
:class:`CallPlan`; its :class:`CallLayout` packs the real tokens of the call's P (image, text) pairs and groups
them into :class:`Bucket` s whose attention runs as one batch each. Everything here is index arithmetic on
host tensors, done before the calls run; a plan then goes to the device whole (:meth:`CallPlan.to`), so the
fusion calls of :class:`~albef.evaluation.pair_scorer.PairScorer` never wait on the host or make it wait.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import torch
from torch import Tensor

from albef.engine.transfer import to_device
from albef.models.bert import MASK_VALUE

MIN_ROWS = 4
"""Query rows are padded to a multiple of this (zero rows): the CPU attention kernels cut queries into blocks
of 32, 64 or 256 rows, and a block of 1-3 rows is a matrix product on another code path, whose sums differ in
the last bit from those of the same rows in a longer block."""
MIN_CALL_PAIRS = 16
"""Fewest pairs a call is cut down to: MKL's multi-threaded sgemm changes its summation order for matrices
of fewer than 12 rows (not a multiple of 4), which would make the [CLS]-row products differ in the last bit."""
MIN_KEYS = 16
"""Fewest keys a self-attention kernel is given (masked zero keys are added): the kernels sum over keys in
vectors of 16 floats, and a shorter row takes a tail path that rounds differently."""


@dataclass
class Bucket:
    """Ragged segments padded to one length ``l``, so that their attention runs as one (n, h, l, d) batch.

    A segment is a text (self-attention: its tokens) or an image (cross-attention: the tokens, or the [CLS]
    rows, of all the texts paired with it, as one query sequence). Built on the host by :meth:`of`, then
    moved to the device whole (:meth:`to`).

    Attributes:
        segments: (n,) the pairs or distinct images of the bucket.
        rows: (n * l,) row of each padded position among the call's rows; padding points at an extra zero row.
        real_at: Positions of the real rows among the n * l.
        real_rows: Rows of the real positions (``rows[real_at]``), where a layer writes its outputs back.
        mask: (n, 1, 1, l) additive key mask, -10000 on padding (self-attention buckets only).
    """

    segments: Tensor
    rows: Tensor
    real_at: Tensor
    real_rows: Tensor
    mask: Tensor | None = None

    @classmethod
    def of(cls, segments: Tensor, rows: Tensor, real: Tensor, mask: Tensor | None = None) -> Bucket:
        """From the padded positions' rows and which of them are real (n * l,)."""
        # Computed once per call and used by every layer; gathers go through index_select, which is a plain
        # copy like advanced indexing but much faster on the CPU for these long index vectors.
        real_at = real.nonzero().squeeze(1)
        return cls(segments, rows, real_at, rows.index_select(0, real_at), mask)

    def to(self, device: torch.device) -> Bucket:
        """The bucket's tensors on ``device`` (without blocking the host)."""
        return Bucket(*(to_device(t, device) for t in astuple_shallow(self)))

    def gather(self, x: Tensor) -> Tensor:
        """The bucket's padded rows of ``x`` (R + 1, W) -> (n * l, W)."""
        return x.index_select(0, self.rows)

    def scatter(self, into: Tensor, padded: Tensor) -> None:
        """Write the real rows of ``padded`` (n * l, W) back to their rows of ``into``."""
        into.index_copy_(0, self.real_rows, padded.index_select(0, self.real_at))


def astuple_shallow(obj: Any) -> tuple[Any, ...]:
    """The dataclass ``obj``'s field values in order (not copied, unlike ``dataclasses.astuple``)."""
    return tuple(getattr(obj, f.name) for f in fields(obj))


def text_bucket_length(length: int, padded_len: int) -> int:
    """A text's bucket length: at least :data:`MIN_KEYS`, in steps of :data:`MIN_ROWS`, at most ``padded_len``."""
    return min(padded_len, max(MIN_KEYS, -(-length // MIN_ROWS) * MIN_ROWS))


def sequence_bucket_length(rows: int) -> int:
    """A query sequence's bucket length: rounded up to 4 steps per octave (at most 25% padding), a multiple
    of :data:`MIN_ROWS`."""
    step = max(MIN_ROWS, 1 << max(0, (rows - 1).bit_length() - 3))
    return -(-rows // step) * step


def ragged_buckets(
    starts: Tensor, sizes: Tensor, bucket_len: Callable[[int], int], pad_row: int, key_mask: bool = False
) -> list[Bucket]:
    """Segments of ``sizes[i]`` rows from ``starts[i]``, grouped by ``bucket_len(sizes[i])``; padding reads
    row ``pad_row``."""
    lengths = torch.tensor([bucket_len(n) for n in sizes.tolist()], device=sizes.device)
    buckets = []
    for length in lengths.unique().tolist():
        segments = (lengths == length).nonzero().squeeze(1)
        position = torch.arange(length, device=sizes.device)
        real = position[None] < sizes[segments, None]  # (n, l)
        rows = torch.where(real, starts[segments, None] + position, pad_row)
        mask = torch.zeros(real.shape, device=sizes.device).masked_fill(~real, MASK_VALUE)[:, None, None]
        buckets.append(Bucket.of(segments, rows.reshape(-1), real.reshape(-1), mask if key_mask else None))
    return buckets


@dataclass
class CallLayout:
    """Where the tokens of one call are: P pairs ordered by image, their real tokens packed as (T, H).

    Attributes:
        flat: (T,) positions of the real tokens in the padded (P * L) layout, pair by pair.
        cls: (P,) packed row of each pair's [CLS] (its first token).
        texts: Self-attention buckets of the pairs' texts (rows among the T tokens).
        images: Cross-attention buckets of the distinct images (rows among the T tokens).
        image_cls: Last-layer cross-attention buckets of the distinct images (rows among the P [CLS] rows).
    """

    flat: Tensor
    cls: Tensor
    texts: list[Bucket]
    images: list[Bucket]
    image_cls: list[Bucket]

    @classmethod
    def build(cls, mask: Tensor, pairs_per_image: Tensor) -> CallLayout:
        """From the pairs' 0/1 prefix masks (P, L) and the pair count of each distinct image (U,)."""
        lengths = mask.sum(dim=1)
        ends = lengths.cumsum(0)
        starts = ends - lengths
        first = pairs_per_image.cumsum(0) - pairs_per_image  # each image's first pair
        image_rows = ends[first + pairs_per_image - 1] - starts[first]  # tokens of each image's texts
        text_len, tokens = partial(text_bucket_length, padded_len=mask.shape[1]), int(ends[-1])
        return cls(
            flat=mask.reshape(-1).nonzero().squeeze(1),
            cls=starts,
            texts=ragged_buckets(starts, lengths, text_len, tokens, key_mask=True),
            images=ragged_buckets(starts[first], image_rows, sequence_bucket_length, tokens),
            image_cls=ragged_buckets(first, pairs_per_image, sequence_bucket_length, lengths.shape[0]),
        )

    def to(self, device: torch.device) -> CallLayout:
        """The layout's tensors on ``device``."""
        return CallLayout(
            to_device(self.flat, device),
            to_device(self.cls, device),
            *([b.to(device) for b in buckets] for buckets in (self.texts, self.images, self.image_cls)),
        )


# -- the calls of a re-rank ---------------------------------------------------------------------------------------
@dataclass
class CallPlan:
    """One fusion call, planned on the host: which pairs, which images, which text tokens, and their layout.

    Attributes:
        picked: (P,) positions of the call's pairs among the pairs being scored (where its scores go).
        images: (U,) the distinct images of the call, in order.
        tokens: (T,) rows of the pairs' real text tokens in the flattened (N_t * L, H) text states.
        layout: Where those tokens go in the call (:class:`CallLayout`).
    """

    picked: Tensor
    images: Tensor
    tokens: Tensor
    layout: CallLayout

    @property
    def pairs(self) -> int:
        """P, the pairs of the call."""
        return int(self.picked.shape[0])

    def to(self, device: torch.device) -> CallPlan:
        """The plan's tensors on ``device``, copied without blocking the host."""
        picked, images, tokens = (to_device(t, device) for t in (self.picked, self.images, self.tokens))
        return CallPlan(picked, images, tokens, self.layout.to(device))


def call_slices(sorted_images: Tensor, pairs_per_call: int) -> Iterator[slice]:
    """Calls of about equal size (at most ``pairs_per_call``, plus a tail too small to stand alone) over pairs
    sorted by image, cut where the image changes unless that leaves a call of fewer than
    :data:`MIN_CALL_PAIRS` pairs."""
    total, start = sorted_images.shape[0], 0
    per_call = max(pairs_per_call, MIN_CALL_PAIRS)
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


def plan_calls(
    image_idx: Tensor, text_idx: Tensor, picked: Tensor, lengths: Tensor, padded_len: int, pairs_per_call: int
) -> list[CallPlan]:
    """The calls that score the pairs ``picked`` (positions into ``image_idx`` / ``text_idx``, already ordered by
    image), from the texts' token counts ``lengths`` (N_t,); host tensors in, host plans out."""
    plans = []
    for part in call_slices(image_idx[picked], pairs_per_call):
        chosen = picked[part]
        images, texts = image_idx[chosen], text_idx[chosen]
        distinct, counts = torch.unique_consecutive(images, return_counts=True)
        mask = torch.arange(padded_len) < lengths[texts, None]  # (P, L) prefix masks
        layout = CallLayout.build(mask.long(), counts)
        tokens = texts[layout.flat // padded_len] * padded_len + layout.flat % padded_len
        plans.append(CallPlan(chosen, distinct, tokens, layout))
    return plans
