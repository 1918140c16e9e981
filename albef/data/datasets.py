"""Torch datasets for every task, over the typed records of ``albef.data.formats``.

Every random choice of a sample (the caption drawn from a list, the augmentation) is a pure function of
``(seed, epoch, index)``: each sample runs under its own forked torch RNG. The same epoch therefore yields
the same samples whatever the number of workers, and a run resumed mid-epoch sees exactly the samples an
uninterrupted run would have seen.

With ``bad_images="skip"`` an unreadable image does not stop the run. An evaluation dataset hands on the
:class:`~albef.data.images.SkippedImage` describing it in place of the sample, which the collate functions
drop and carry along so that the main process can count and report it (see ``albef.data.collate``). A
training dataset (``refill``, set by ``build_loader(train=True)``) instead returns the next record that
loads, wrapped with the skips in a :class:`Refilled`: its batches keep their full size, which the ITC queues
(whose size must be a multiple of the global batch) and the collectives of distributed training need.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from albef.data.errors import DataError
from albef.data.images import BadImageMode, BadImagePolicy, SkippedImage
from albef.data.records import (
    FalseCaption,
    GroundingRecord,
    NLVRRecord,
    PretrainRecord,
    RetrievalEvalSet,
    RetrievalTrainRecord,
    VERecord,
    VQARecord,
)
from albef.data.shards import SCHEME as SHARD_SCHEME
from albef.data.shards import ShardMember
from albef.data.text import pre_caption, pre_question

Transform = Callable[[Image.Image], Tensor]
CropBox = tuple[float, float, float, float]
"""``(x, y, w, h)`` in pixels of the original image."""
R = TypeVar("R")


class EpochIndex(int):
    """A sample index that carries the epoch it is drawn for.

    The training sampler yields these, so the epoch travels with every index to the loader workers: a
    persistent worker keeps the dataset copy it started with, on which :meth:`RecordDataset.set_epoch` of the
    main process never lands, and would otherwise draw epoch 0's captions and augmentations forever.
    """

    epoch: int

    def __new__(cls, index: int, epoch: int) -> EpochIndex:
        obj = super().__new__(cls, index)
        obj.epoch = epoch
        return obj

    def __reduce__(self) -> tuple[Any, tuple[int, int]]:
        return (EpochIndex, (int(self), self.epoch))


@dataclass(frozen=True)
class Refilled:
    """A training sample that stands in for records whose images could not be read (``skipped``)."""

    sample: Any
    skipped: tuple[SkippedImage, ...]


class _Skip(Exception):
    """Raised inside a sample build when an image is skipped; carries the record of the skip."""

    def __init__(self, skipped: SkippedImage) -> None:
        super().__init__(str(skipped))
        self.skipped = skipped


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that is a pure function of ``(seed, epoch, index)`` (numpy's ``SeedSequence`` mixing)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0]
    return int(state) & 0x7FFF_FFFF_FFFF_FFFF


def resolve_image(root: str | Path, image: str) -> Path | ShardMember:
    """Join a record's image path to its root (absolute paths are kept, as the official pretraining lists); a
    shard reference is the member it names."""
    if image.startswith(SHARD_SCHEME):
        return ShardMember.parse(image)
    path = Path(image)
    return path if path.is_absolute() else Path(root) / path


class RecordDataset(Dataset[Any], Generic[R]):
    """Records + image loading + per-sample deterministic randomness.

    Args:
        records: Typed records of one file.
        transform: PIL image -> tensor (3, R, R).
        source: The annotation file, named in error messages.
        seed: Base seed of the per-sample RNG.
        bad_images: ``"error"`` raises a :class:`DataError` for an unreadable image; ``"skip"`` returns the
            :class:`SkippedImage` record in place of the sample.
    """

    def __init__(
        self,
        records: Sequence[R],
        transform: Transform,
        *,
        source: str,
        seed: int = 0,
        bad_images: BadImageMode = "error",
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.source = source
        self.seed = seed
        self.epoch = 0
        self.policy = BadImagePolicy(bad_images)
        self.refill = False
        """Replace a skipped sample by the next one that loads (training), instead of handing on the skip."""

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose randomness ``__getitem__`` reproduces."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> Any:
        """The sample of ``index`` with the randomness of its epoch: the one an :class:`EpochIndex` carries
        (a loader worker's copy of the dataset never sees :meth:`set_epoch`), else the last set."""
        epoch = getattr(index, "epoch", self.epoch)
        index = int(index)
        try:
            return self._sample(index, epoch)
        except _Skip as skip:
            if not self.refill:
                return skip.skipped
            skipped = [skip.skipped]
        # Training: the records after it, in order, until one loads (each with its own randomness).
        for offset in range(1, len(self.records)):
            try:
                return Refilled(self._sample((index + offset) % len(self.records), epoch), tuple(skipped))
            except _Skip as skip:
                skipped.append(skip.skipped)
        raise DataError(
            self.source, f"no image of its {len(self.records)} records could be read; the first: {skipped[0]}"
        )

    def _sample(self, index: int, epoch: int) -> Any:
        rng_seed = sample_seed(self.seed, epoch, index)
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed would also queue a CUDA seeding call (with a
            # captured stack) per sample on a CUDA build, a third of the loading time.
            torch.random.default_generator.manual_seed(rng_seed)
            return self.build(self.records[index], index, random.Random(rng_seed))

    def image(self, root: str | Path, image: str, index: int, box: CropBox | None = None) -> Tensor:
        """Load and transform one image of record ``index`` (raises or skips per the bad-image policy),
        cropped first to ``box`` = ``(x, y, w, h)`` in pixels when one is given."""
        loaded = self.policy.load(resolve_image(root, image), source=self.source, index=index)
        if isinstance(loaded, SkippedImage):
            raise _Skip(loaded)
        if box is not None:
            x, y, w, h = box
            loaded = loaded.crop((x, y, x + w, y + h))
        return self.transform(loaded)

    def build(self, record: R, index: int, rng: random.Random) -> Any:
        """Turn one record into a sample; subclasses implement it."""
        raise NotImplementedError


class RootedDataset(RecordDataset[R]):
    """A :class:`RecordDataset` whose images live under one root and whose texts get ``pre_caption``.

    Args:
        records: Typed records of one file.
        image_root: Root the records' relative image paths are joined to.
        transform: PIL image -> tensor (3, R, R).
        max_words: ``pre_caption`` word limit.
        **kwargs: ``source``, ``seed``, ``bad_images`` of :class:`RecordDataset`.
    """

    def __init__(
        self,
        records: Sequence[R],
        image_root: str | Path,
        transform: Transform,
        max_words: int = 30,
        **kwargs: Any,
    ) -> None:
        super().__init__(records, transform, **kwargs)
        self.image_root = image_root
        self.max_words = max_words


@dataclass
class CaptionSample:
    """An image and one pre-processed caption (pretraining, text assignment), and optionally a caption known
    to be false of the image (an extra ITM negative, ``data.itm_text_negatives``) with the true caption it was
    made from (an extra ITM positive), when the file pairs them."""

    image: Tensor
    caption: str
    negative: str | None = None
    negative_source: str | None = None


class PretrainDataset(RootedDataset[PretrainRecord]):
    """Pretraining pairs; a caption is drawn uniformly from the record's list at each access.

    Args:
        negatives: Image path -> captions false of that image; when given, each sample of such an image also
            carries one of them (with its true source caption, if paired), drawn uniformly after the caption.
        **kwargs: As :class:`RootedDataset`.
    """

    def __init__(
        self, *args: Any, negatives: Mapping[str, Sequence[FalseCaption]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.negatives = negatives or {}

    def build(self, record: PretrainRecord, index: int, rng: random.Random) -> CaptionSample:
        caption = record.captions[rng.randrange(len(record.captions))]
        false = self.negatives.get(record.image)
        drawn = false[rng.randrange(len(false))] if false else None
        negative, source = (None, None) if drawn is None else (drawn.negative, drawn.caption)
        return CaptionSample(
            self.image(self.image_root, record.image, index),
            pre_caption(caption, self.max_words),
            None if negative is None else pre_caption(negative, self.max_words),
            None if source is None else pre_caption(source, self.max_words),
        )


@dataclass
class RetrievalSample:
    """An image, one caption and the image's contiguous id (the ITC positive key)."""

    image: Tensor
    caption: str
    idx: int


class RetrievalTrainDataset(RootedDataset[RetrievalTrainRecord]):
    """Retrieval finetuning pairs, one per caption."""

    def build(self, record: RetrievalTrainRecord, index: int, rng: random.Random) -> RetrievalSample:
        image = self.image(self.image_root, record.image, index)
        return RetrievalSample(image, pre_caption(record.caption, self.max_words), record.idx)


@dataclass
class IndexedImage:
    """An evaluation image and its position in the split."""

    image: Tensor
    index: int


class RetrievalEvalImages(RecordDataset[str]):
    """The images of a retrieval val/test split, in file order (texts: :func:`retrieval_eval_texts`)."""

    def __init__(
        self, split: RetrievalEvalSet, image_root: str | Path, transform: Transform, **kwargs: Any
    ) -> None:
        super().__init__(split.images, transform, **kwargs)
        self.image_root = image_root

    def build(self, record: str, index: int, rng: random.Random) -> IndexedImage:
        return IndexedImage(self.image(self.image_root, record, index), index)


def retrieval_eval_texts(split: RetrievalEvalSet, max_words: int = 30) -> list[str]:
    """The split's captions after ``pre_caption``, in text-id order."""
    return [pre_caption(text, max_words) for text in split.texts]


@dataclass
class VQASample:
    """A question with its image; answers/weights for training, ``question_id`` for testing."""

    image: Tensor
    question: str
    answers: tuple[str, ...]
    weights: tuple[float, ...]
    question_id: int | None


class VQADataset(RecordDataset[VQARecord]):
    """VQA questions; each record's image root is chosen by its ``dataset`` field (``vqa`` or ``vg``)."""

    def __init__(
        self,
        records: Sequence[VQARecord],
        roots: Mapping[str, str | Path],
        transform: Transform,
        max_words: int = 30,
        **kwargs: Any,
    ) -> None:
        super().__init__(records, transform, **kwargs)
        self.roots = dict(roots)
        self.max_words = max_words

    def build(self, record: VQARecord, index: int, rng: random.Random) -> VQASample:
        if record.dataset not in self.roots:
            raise DataError(
                self.source, f"no image root for dataset {record.dataset!r}", index=index, field="dataset"
            )
        image = self.image(self.roots[record.dataset], record.image, index)
        question = pre_question(record.question, self.max_words)
        return VQASample(image, question, record.answers, record.weights, record.question_id)


@dataclass
class PairSample:
    """Two images, a statement and its label (NLVR²)."""

    image0: Tensor
    image1: Tensor
    sentence: str
    label: int


class NLVRDataset(RootedDataset[NLVRRecord]):
    """NLVR² examples; label 1 means the statement is true of the pair."""

    def build(self, record: NLVRRecord, index: int, rng: random.Random) -> PairSample:
        first = self.image(self.image_root, record.images[0], index)
        second = self.image(self.image_root, record.images[1], index)
        return PairSample(first, second, pre_caption(record.sentence, self.max_words), int(record.label))


@dataclass
class LabelledSample:
    """An image, a sentence and a class label (SNLI-VE)."""

    image: Tensor
    sentence: str
    label: int


class VEDataset(RootedDataset[VERecord]):
    """SNLI-VE examples (2 entailment, 1 neutral, 0 contradiction)."""

    def build(self, record: VERecord, index: int, rng: random.Random) -> LabelledSample:
        image = self.image(self.image_root, record.image, index)
        return LabelledSample(image, pre_caption(record.sentence, self.max_words), record.label)


@dataclass
class GroundingSample:
    """An image, a referring expression and its ref id."""

    image: Tensor
    text: str
    ref_id: int


class GroundingDataset(RootedDataset[GroundingRecord]):
    """Referring expressions of a grounding val/test file (the test transform; texts ``pre_caption``-ed)."""

    def build(self, record: GroundingRecord, index: int, rng: random.Random) -> GroundingSample:
        image = self.image(self.image_root, record.image, index)
        return GroundingSample(image, pre_caption(record.text, self.max_words), record.ref_id)


class EpochConcatDataset(ConcatDataset[Any]):
    """``ConcatDataset`` that forwards :meth:`set_epoch` to its parts (one part per annotation file)."""

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of every part."""
        for part in self.datasets:
            part.set_epoch(epoch)  # type: ignore[attr-defined]

    def __getitem__(self, idx: int) -> Any:
        """The sample of ``idx``; an :class:`EpochIndex` reaches its part with its epoch."""
        epoch = getattr(idx, "epoch", None)
        if epoch is None or idx < 0:
            return super().__getitem__(idx)
        part = bisect.bisect_right(self.cumulative_sizes, idx)
        local = int(idx) - (self.cumulative_sizes[part - 1] if part else 0)
        return self.datasets[part][EpochIndex(local, epoch)]
