"""Where the tokens of a re-rank call go: ragged buckets of texts and images, padded to a few lengths.

:class:`CallLayout` packs the real tokens of P (image, text) pairs ordered by image and groups them into
:class:`Bucket` s whose attention runs as one batch each (see :mod:`albef.evaluation.rerank`, which uses them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from albef.models.bert import MASK_VALUE

MIN_ROWS = 4
"""Query rows are padded to a multiple of this (zero rows): the CPU attention kernels cut queries into blocks
of 32, 64 or 256 rows, and a block of 1-3 rows is a matrix product on another code path, whose sums differ in
the last bit from those of the same rows in a longer block."""
MIN_KEYS = 16
"""Fewest keys a self-attention kernel is given (masked zero keys are added): the kernels sum over keys in
vectors of 16 floats, and a shorter row takes a tail path that rounds differently."""


@dataclass
class Bucket:
    """Ragged segments padded to one length ``l``, so that their attention runs as one (n, h, l, d) batch.

    A segment is a text (self-attention: its tokens) or an image (cross-attention: the tokens, or the [CLS]
    rows, of all the texts paired with it, as one query sequence).

    Attributes:
        segments: (n,) the pairs or distinct images of the bucket.
        rows: (n * l,) row of each padded position among the call's rows; padding points at an extra zero row.
        real: (n * l,) which padded positions are real rows.
        mask: (n, 1, 1, l) additive key mask, -10000 on padding (self-attention buckets only).
        real_at: Positions of the real rows among the n * l (``real.nonzero()``).
        real_rows: Rows of the real positions (``rows[real]``), where a layer writes its outputs back.
    """

    segments: Tensor
    rows: Tensor
    real: Tensor
    mask: Tensor | None = None
    real_at: Tensor = field(init=False)
    real_rows: Tensor = field(init=False)

    def __post_init__(self) -> None:
        # Computed once per call and used by every layer; gathers go through index_select, which is a plain
        # copy like advanced indexing but much faster on the CPU for these long index vectors.
        self.real_at = self.real.nonzero().squeeze(1)
        self.real_rows = self.rows.index_select(0, self.real_at)

    def gather(self, x: Tensor) -> Tensor:
        """The bucket's padded rows of ``x`` (R + 1, W) -> (n * l, W)."""
        return x.index_select(0, self.rows)

    def scatter(self, into: Tensor, padded: Tensor) -> None:
        """Write the real rows of ``padded`` (n * l, W) back to their rows of ``into``."""
        into.index_copy_(0, self.real_rows, padded.index_select(0, self.real_at))


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
        buckets.append(Bucket(segments, rows.reshape(-1), real.reshape(-1), mask if key_mask else None))
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
