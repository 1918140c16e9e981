"""Typed records produced by the format readers (``albef.data.formats``).

Strings are kept exactly as written in the files (no ``pre_caption``), and image paths are kept relative or
absolute as written; joining them with an image root is the datasets' job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

ImageId = str | int | float
"""A retrieval ``image_id``: any JSON scalar except null and booleans."""

VE_LABELS: dict[str, int] = {"entailment": 2, "neutral": 1, "contradiction": 0}
"""SNLI-VE label strings and the class indices the official code uses."""

NLVR_LABELS: dict[str, bool] = {"True": True, "False": False}
"""NLVR² labels are the *strings* ``"True"``/``"False"`` in every official file."""


@dataclass(frozen=True)
class PretrainRecord:
    """One image of a pretraining file; one caption is drawn per access when several are given."""

    image: str
    captions: tuple[str, ...]


@dataclass(frozen=True)
class FalseCaption:
    """A caption known to be false of an image (an extra ITM negative, ``data.itm_text_negatives``) and,
    optionally, the true caption it was made from (then also an extra ITM positive: the pair differs only where
    the false one goes wrong, so the loss cannot tell them apart by wording alone)."""

    negative: str
    caption: str | None = None


@dataclass(frozen=True)
class RetrievalTrainRecord:
    """One (image, caption) pair of a retrieval training file.

    Attributes:
        image: Image path as written.
        caption: Raw caption.
        image_id: The file's ``image_id``.
        idx: Contiguous index of ``image_id`` in order of first appearance (the ITC positive key).
    """

    image: str
    caption: str
    image_id: ImageId
    idx: int


@dataclass(frozen=True)
class RetrievalEvalSet:
    """A retrieval val/test split: images, their captions flattened, and the ground-truth links.

    Attributes:
        images: Image paths, in file order.
        texts: Raw captions; those of image 0 first, then image 1, and so on.
        img2txt: For each image, the ids (positions in ``texts``) of its captions.
        txt2img: For each caption, the id of its image.
    """

    images: list[str]
    texts: list[str]
    img2txt: list[list[int]]
    txt2img: list[int]

    def __post_init__(self) -> None:
        if len(self.img2txt) != len(self.images) or len(self.txt2img) != len(self.texts):
            raise ValueError(
                f"inconsistent RetrievalEvalSet: {len(self.images)} images but {len(self.img2txt)} img2txt "
                f"rows, {len(self.texts)} texts but {len(self.txt2img)} txt2img entries"
            )

    @classmethod
    def from_groups(cls, groups: Iterable[tuple[str, Sequence[str]]]) -> RetrievalEvalSet:
        """Build the set from ``(image, captions)`` pairs, numbering texts consecutively in order.

        Args:
            groups: One ``(image path, captions)`` pair per image.

        Returns:
            The evaluation set.
        """
        images: list[str] = []
        texts: list[str] = []
        img2txt: list[list[int]] = []
        txt2img: list[int] = []
        for image_id, (image, captions) in enumerate(groups):
            images.append(image)
            img2txt.append(list(range(len(texts), len(texts) + len(captions))))
            texts.extend(captions)
            txt2img.extend([image_id] * len(captions))
        return cls(images=images, texts=texts, img2txt=img2txt, txt2img=txt2img)

    @property
    def num_images(self) -> int:
        """Number of images."""
        return len(self.images)

    @property
    def num_texts(self) -> int:
        """Number of captions over all images."""
        return len(self.texts)

    def to_albef_records(self) -> list[dict[str, object]]:
        """Return the set in the official val/test JSON layout (``[{"image", "caption": [...]}]``)."""
        return [
            {"image": image, "caption": [self.texts[t] for t in text_ids]}
            for image, text_ids in zip(self.images, self.img2txt, strict=True)
        ]


@dataclass(frozen=True)
class VQARecord:
    """One VQA question with its weighted answer targets.

    Attributes:
        question_id: The official question id (``None`` for Visual Genome QA, which has none).
        question: Raw question.
        image: Image path as written (relative to ``vqa_root`` or ``vg_root`` according to ``dataset``).
        dataset: ``"vqa"`` or ``"vg"``.
        answers: Distinct answers in order of first appearance (empty for test questions).
        weights: Official training weight of each answer (count / number of answers; 0.5 for ``vg``).
        question_type: VQA v2 ``question_type`` when known.
        answer_type: VQA v2 ``answer_type`` when known.
        raw_answers: All answers as given (10 for VQA v2), for the VQA accuracy metric.
    """

    question_id: int | None
    question: str
    image: str
    dataset: str
    answers: tuple[str, ...]
    weights: tuple[float, ...]
    question_type: str | None = None
    answer_type: str | None = None
    raw_answers: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class NLVRRecord:
    """One NLVR² example: two images, a sentence and whether the sentence is true of the pair.

    ``identifier`` is the lil-lab ``split-setid-pairid-sentenceid`` id when the source file has it.
    """

    images: tuple[str, str]
    sentence: str
    label: bool
    identifier: str | None = None


@dataclass(frozen=True)
class RefInfo:
    """What grounding evaluation reads of a REFER ref: its image, split and ground-truth box ``[x, y, w, h]``."""

    ref_id: int
    image_id: int
    split: str
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class GroundingRecord:
    """One referring expression of a grounding val/test file: its image, text and REFER ``ref_id``."""

    image: str
    text: str
    ref_id: int


@dataclass(frozen=True)
class VERecord:
    """One SNLI-VE example; ``label`` is 2 entailment, 1 neutral, 0 contradiction (``VE_LABELS``)."""

    image: str
    sentence: str
    label: int
