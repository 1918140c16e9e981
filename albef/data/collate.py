"""Collate functions: stack images, tokenise texts (in the loader workers), drop and report skipped samples.

Each collator knows its call site's padding/truncation policy (spec §4.3), e.g. pretraining truncates at 25
tokens and pads to the longest text, retrieval training never truncates. Batches are small dataclasses with
``to(device)``; ``skipped`` lists the samples dropped for unreadable images (never silently: the trainer and
evaluators add them to the run's report).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor

from albef.data.datasets import (
    CaptionSample,
    GroundingSample,
    IndexedImage,
    LabelledSample,
    PairSample,
    Refilled,
    RetrievalSample,
    VQASample,
)
from albef.data.images import SkippedImage
from albef.data.tokenizer import TextTokenizer, TokenBatch

S = TypeVar("S")
B = TypeVar("B", bound="Batch")


@dataclass
class Batch:
    """Base of every batch: ``to(device)`` moves each tensor or :class:`TokenBatch` field."""

    skipped: list[SkippedImage] = field(default_factory=list, kw_only=True)

    def to(self: B, device: torch.device | str, non_blocking: bool = False) -> B:
        """A copy of the batch with every tensor on ``device`` (asynchronous from pinned memory with
        ``non_blocking``)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self: B) -> B:
        """A copy of the batch with every tensor in page-locked memory: what the DataLoader's ``pin_memory``
        calls on each batch, so that the copy to the GPU can overlap the step."""
        return self._map(lambda t: t.pin_memory())

    def _map(self: B, move: Callable[[Tensor], Tensor]) -> B:
        moved: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = move(value)
            elif isinstance(value, TokenBatch):
                value = TokenBatch(move(value.input_ids), move(value.attention_mask))
            moved[f.name] = value
        return dataclasses.replace(self, **moved)

    def __len__(self) -> int:
        first = next(f for f in dataclasses.fields(self) if f.name != "skipped")
        return len(getattr(self, first.name))


def split_skipped(samples: Sequence[Any]) -> tuple[list[Any], list[SkippedImage]]:
    """Separate real samples from the :class:`SkippedImage` records that stand in for skipped ones (a
    :class:`~albef.data.datasets.Refilled` sample counts as its sample, its skips as skips).

    Raises:
        RuntimeError: If every sample of the batch was skipped (nothing left to train or evaluate on).
    """
    kept: list[Any] = []
    skipped: list[SkippedImage] = []
    for sample in samples:
        if isinstance(sample, SkippedImage):
            skipped.append(sample)
        elif isinstance(sample, Refilled):
            kept.append(sample.sample)
            skipped.extend(sample.skipped)
        else:
            kept.append(sample)
    if not kept and skipped:
        raise RuntimeError(
            f"all {len(skipped)} samples of a batch had unreadable images; the first: {skipped[0]}"
        )
    return kept, skipped


@dataclass
class TextPolicy:
    """How a call site pads and truncates: ``max_length=None`` never truncates."""

    padding: str = "longest"
    max_length: int | None = None

    def encode(self, tokenizer: TextTokenizer, texts: Sequence[str]) -> TokenBatch:
        """Tokenise with this policy."""
        return tokenizer.encode(list(texts), padding=self.padding, max_length=self.max_length)  # type: ignore[arg-type]


@dataclass
class ImageTextBatch(Batch):
    """Images (B, 3, R, R) and their texts (pretraining, text assignment); with ``data.itm_text_negatives``
    also extra ITM pairs: captions ``extra_text`` (N, L) about images ``extra_rows`` (N,), each false
    (``extra_labels`` 0) or the true caption a false one was made from (1)."""

    image: Tensor
    text: TokenBatch
    extra_text: TokenBatch | None = None
    extra_rows: Tensor | None = None
    extra_labels: Tensor | None = None


@dataclass
class RetrievalBatch(Batch):
    """Images, captions and image ids (B,) for ITC positives."""

    image: Tensor
    text: TokenBatch
    idx: Tensor


@dataclass
class ImageBatch(Batch):
    """Evaluation images and their positions in the split (B,)."""

    image: Tensor
    index: Tensor


@dataclass
class VQABatch(Batch):
    """Questions; for training also the flattened answers, their weights and answers-per-question ``k``.

    Attributes:
        image: (B, 3, R, R).
        question: Tokenised questions (B, Lq).
        answer: Tokenised ``answer [SEP]`` rows (sum(k), La), or ``None`` for test batches.
        weights: (sum(k),) answer weights.
        k: Number of answers of each question.
        question_id: (B,) official ids (-1 where unknown).
    """

    image: Tensor
    question: TokenBatch
    answer: TokenBatch | None
    weights: Tensor
    k: list[int]
    question_id: Tensor


@dataclass
class PairBatch(Batch):
    """NLVR² pairs: two image tensors (B, 3, R, R), statements and labels (B,)."""

    image0: Tensor
    image1: Tensor
    text: TokenBatch
    label: Tensor


@dataclass
class LabelledBatch(Batch):
    """SNLI-VE: images, hypotheses and labels (B,)."""

    image: Tensor
    text: TokenBatch
    label: Tensor


class Collator:
    """Base collator: holds the tokenizer and the text policy of its call site."""

    def __init__(self, tokenizer: TextTokenizer, policy: TextPolicy | None = None) -> None:
        self.tokenizer = tokenizer
        self.policy = policy or TextPolicy()

    def texts(self, texts: Sequence[str]) -> TokenBatch:
        """Tokenise ``texts`` with this call site's policy."""
        return self.policy.encode(self.tokenizer, texts)


class CaptionCollator(Collator):
    """(image, caption) samples -> :class:`ImageTextBatch`."""

    def __call__(self, samples: Sequence[CaptionSample | SkippedImage]) -> ImageTextBatch:
        kept, skipped = split_skipped(samples)
        images = torch.stack([s.image for s in kept])
        captions = self.texts([s.caption for s in kept])
        # The false captions first, then the true ones they were made from (each about its sample's image).
        extras = [(s.negative, i, 0) for i, s in enumerate(kept) if s.negative is not None]
        extras += [(s.negative_source, i, 1) for i, s in enumerate(kept) if s.negative_source is not None]
        if not extras:
            return ImageTextBatch(images, captions, skipped=skipped)
        texts, rows, labels = zip(*extras, strict=True)
        return ImageTextBatch(
            images, captions, self.texts(texts), torch.tensor(rows), torch.tensor(labels), skipped=skipped
        )


class RetrievalCollator(Collator):
    """(image, caption, idx) samples -> :class:`RetrievalBatch`."""

    def __call__(self, samples: Sequence[RetrievalSample | SkippedImage]) -> RetrievalBatch:
        kept, skipped = split_skipped(samples)
        idx = torch.tensor([s.idx for s in kept], dtype=torch.long)
        images = torch.stack([s.image for s in kept])
        return RetrievalBatch(images, self.texts([s.caption for s in kept]), idx, skipped=skipped)


def collate_images(samples: Sequence[IndexedImage | SkippedImage]) -> ImageBatch:
    """Evaluation images -> :class:`ImageBatch`."""
    kept, skipped = split_skipped(samples)
    index = torch.tensor([s.index for s in kept], dtype=torch.long)
    return ImageBatch(torch.stack([s.image for s in kept]), index, skipped=skipped)


class VQACollator(Collator):
    """VQA samples -> :class:`VQABatch`; answers are ``answer [SEP]`` padded to the longest."""

    def __call__(self, samples: Sequence[VQASample | SkippedImage]) -> VQABatch:
        kept, skipped = split_skipped(samples)
        answers = [a for s in kept for a in s.answers]
        weights = torch.tensor([w for s in kept for w in s.weights], dtype=torch.float)
        qids = torch.tensor([-1 if s.question_id is None else s.question_id for s in kept], dtype=torch.long)
        return VQABatch(
            image=torch.stack([s.image for s in kept]),
            question=self.texts([s.question for s in kept]),
            answer=self.tokenizer.encode_answers(answers) if answers else None,
            weights=weights,
            k=[len(s.answers) for s in kept],
            question_id=qids,
            skipped=skipped,
        )


class PairCollator(Collator):
    """NLVR² samples -> :class:`PairBatch`."""

    def __call__(self, samples: Sequence[PairSample | SkippedImage]) -> PairBatch:
        kept, skipped = split_skipped(samples)
        return PairBatch(
            torch.stack([s.image0 for s in kept]),
            torch.stack([s.image1 for s in kept]),
            self.texts([s.sentence for s in kept]),
            torch.tensor([s.label for s in kept], dtype=torch.long),
            skipped=skipped,
        )


@dataclass
class GroundingBatch(Batch):
    """Grounding: images, referring expressions and their ref ids (B,)."""

    image: Tensor
    text: TokenBatch
    ref_id: Tensor


class GroundingCollator(Collator):
    """Grounding samples -> :class:`GroundingBatch`."""

    def __call__(self, samples: Sequence[GroundingSample | SkippedImage]) -> GroundingBatch:
        kept, skipped = split_skipped(samples)
        return GroundingBatch(
            torch.stack([s.image for s in kept]),
            self.texts([s.text for s in kept]),
            torch.tensor([s.ref_id for s in kept], dtype=torch.long),
            skipped=skipped,
        )


class LabelledCollator(Collator):
    """SNLI-VE samples -> :class:`LabelledBatch`."""

    def __call__(self, samples: Sequence[LabelledSample | SkippedImage]) -> LabelledBatch:
        kept, skipped = split_skipped(samples)
        return LabelledBatch(
            torch.stack([s.image for s in kept]),
            self.texts([s.sentence for s in kept]),
            torch.tensor([s.label for s in kept], dtype=torch.long),
            skipped=skipped,
        )
