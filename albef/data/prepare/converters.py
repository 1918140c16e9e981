"""Converters from the official raw annotation formats to the ALBEF files the loaders read.

The functions named ``*_records``/``*_groups``/``*_layout`` and :func:`build_answer_list` are pure: they read their
input through the validating readers of :mod:`albef.data.formats` (so malformed input raises
:class:`~albef.data.errors.DataError` naming the file and the record) and return JSON-ready records. Each is
wrapped by a converter registered in :data:`CONVERTERS`, which a manifest source names.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from albef.data import formats
from albef.data.errors import DataError
from albef.data.formats_base import PathLike, read_json_lines, read_records, top_level_object
from albef.data.records import VE_LABELS, RetrievalEvalSet, VQARecord
from albef.registry import Registry

ANSWER_LIST_SIZE = 3128
"""Size of the official ALBEF ``answer_list.json`` (counted in the released file)."""

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
"""Karpathy split of an image -> ALBEF split (``restval`` joins training, as the 113,287-image COCO train)."""

Payload = list[Any] | Path
"""What a converter makes for one output: JSON records to write, or a file to copy byte for byte."""


@dataclass(frozen=True)
class Converted:
    """A converter's results by role, and notes worth reporting."""

    payloads: dict[str, Payload]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SourceInputs:
    """What a converter receives: required inputs, optional ones (``None`` when absent) and options."""

    root: Path
    inputs: tuple[Path, ...]
    optional: tuple[Path | None, ...]
    options: Mapping[str, Any]


Converter = Callable[[SourceInputs], Converted]
CONVERTERS: Registry[Converter] = Registry("converter")


# ----------------------------------------------------------------------------------------------- converters
Group = tuple[str, str, Sequence[str]]
"""An image of a caption dataset: ``(image path, image id, captions)``."""


def train_layout(groups: Iterable[Group]) -> list[dict[str, Any]]:
    """Retrieval training records: one ``{image, caption, image_id}`` per caption, in image order."""
    return [
        {"image": image, "caption": c, "image_id": image_id} for image, image_id, caps in groups for c in caps
    ]


def eval_layout(groups: Iterable[Group]) -> list[dict[str, Any]]:
    """Retrieval val/test records: one ``{image, caption: [...]}`` per image."""
    return [{"image": image, "caption": list(caps)} for image, _, caps in groups]


def _stem(image: str) -> str:
    return posixpath.splitext(posixpath.basename(image))[0]


def karpathy_groups(path: PathLike, image_dir: str | None, id_field: str | None) -> dict[str, list[Group]]:
    """Read a Karpathy split file (``dataset_coco.json``, ``dataset_flickr30k.json``) by ALBEF split.

    Args:
        path: The file: ``{"images": [{"filename", "split", "sentences": [{"raw"}], ...}]}``.
        image_dir: Folder prepended to ``filename``; ``None`` uses each image's ``filepath`` (COCO).
        id_field: Integer field giving the image id (``cocoid`` -> ``coco_<id>``); ``None``: the file stem.

    Returns:
        ``train`` (Karpathy train + restval), ``val`` and ``test`` groups, in file order; captions are ``raw``.
    """
    groups: dict[str, list[Group]] = {"train": [], "val": [], "test": []}
    for rec in top_level_object(path).objects("images"):
        split = rec.choice("split", KARPATHY_SPLITS)
        folder = image_dir if image_dir is not None else rec.nonblank("filepath")
        image = posixpath.join(folder, rec.nonblank("filename"))
        captions = [sentence.nonblank("raw") for sentence in rec.objects("sentences")]
        if not captions:
            raise rec.error("sentences", "empty list")
        image_id = f"coco_{rec.integer(id_field)}" if id_field else _stem(image)
        groups[split].append((image, image_id, captions))
    return groups


def _eval_groups(split: RetrievalEvalSet) -> list[Group]:
    return [
        (image, _stem(image), [split.texts[t] for t in ids])
        for image, ids in zip(split.images, split.img2txt, strict=True)
    ]


def vqa_albef_records(records: Iterable[VQARecord]) -> list[dict[str, Any]]:
    """VQA records in the ALBEF layout; ``answer`` holds every annotator answer (absent for test questions)."""
    out: list[dict[str, Any]] = []
    for r in records:
        item: dict[str, Any] = {"question_id": r.question_id, "question": r.question}
        if r.raw_answers:
            item["answer"] = list(r.raw_answers)
        out.append({**item, "image": r.image, "dataset": r.dataset})
    return out


def majority_answer(record: VQARecord) -> str:
    """The most frequent of a question's answers; ties go to the answer given first."""
    answers = record.raw_answers or record.answers
    if not answers:
        raise ValueError(f"question {record.question_id} has no answers")
    return Counter(answers).most_common(1)[0][0]  # most_common keeps first-seen order among ties


def build_answer_list(records: Iterable[VQARecord], size: int = ANSWER_LIST_SIZE) -> list[str]:
    """The VQA candidate answers: the ``size`` most frequent majority answers, in order of first appearance.

    Each question votes once, for its majority answer (:func:`majority_answer`). The answers with the most votes
    are kept; at the cut-off, ties go to the answer that appears first. The list is then ordered by first
    appearance: the released list starts ``net, pitcher, orange``, the majority answers of the first three
    VQA v2 training questions, which suggests this is how it was built (its selection rule is not published).

    Args:
        records: Annotated questions in file order (train, then val).
        size: How many answers to keep (fewer if there are fewer distinct answers).

    Returns:
        The answers.
    """
    votes = Counter(majority_answer(r) for r in records)  # insertion order = first appearance
    first_seen = {answer: i for i, answer in enumerate(votes)}
    kept = set(sorted(votes, key=lambda a: (-votes[a], first_seen[a]))[:size])
    return [answer for answer in votes if answer in kept]


def vg_albef_records(path: PathLike, image_dir: str) -> list[dict[str, Any]]:
    """Visual Genome ``question_answers.json`` -> ALBEF ``vg_qa.json`` records (``dataset: "vg"``).

    VG answers are sentences ("Green."); they are lower-cased and lose a trailing period so that they match
    the VQA answer vocabulary (ALBEF's own normalisation of ``vg_qa.json`` is not published).
    """
    out: list[dict[str, Any]] = []
    for image in read_records(path):
        image_id = image.integer("id")
        for qa in image.objects("qas"):
            answer = qa.string("answer").strip().rstrip(".").strip().lower()
            if not answer:
                raise qa.error("answer", f"empty after normalisation ({qa.raw['answer']!r})")
            image_path = f"{image_dir}/{image_id}.jpg"
            out.append(
                {"question": qa.nonblank("question"), "answer": answer, "image": image_path, "dataset": "vg"}
            )
    return out


def index_images(folder: Path, suffix: str = ".png") -> dict[str, str]:
    """File name -> path relative to ``folder``'s parent, for every image below ``folder`` (sorted walk)."""
    return {p.name: p.relative_to(folder.parent).as_posix() for p in sorted(folder.rglob(f"*{suffix}"))}


def nlvr_albef_records(path: PathLike, image_dir: str, index: Mapping[str, str]) -> list[dict[str, Any]]:
    """lil-lab NLVR2 JSON lines -> ALBEF ``nlvr_*.json`` records (the identifier is kept).

    Args:
        path: ``nlvr2/data/<split>.json``.
        image_dir: Folder of the split's images relative to the image root (``dev``, ``test1``, ``train``).
        index: Image name -> path relative to the image root, for images in numbered sub-folders (train);
            a name not in it is written as ``image_dir/name``.
    """
    return [
        {
            "images": [index.get(name, f"{image_dir}/{name}") for name in rec.images],
            "sentence": rec.sentence,
            "label": "True" if rec.label else "False",
            "identifier": rec.identifier,
        }
        for rec in formats.read_nlvr_lil(path)
    ]


def snli_ve_albef_records(path: PathLike) -> list[dict[str, Any]]:
    """SNLI-VE JSON lines (``snli_ve_<split>.jsonl``) -> ALBEF ``ve_*.json`` records."""
    labels = {label: label for label in VE_LABELS}
    out: list[dict[str, Any]] = []
    for rec in read_json_lines(path):
        image = rec.nonblank("Flikr30kID")  # sic: the field's spelling in the release
        image = image[: -len(".jpg")] if image.lower().endswith(".jpg") else image
        out.append(
            {"image": image, "sentence": rec.nonblank("sentence2"), "label": rec.choice("gold_label", labels)}
        )
    return out


def img2dataset_records(folder: Path, root: Path) -> tuple[list[dict[str, Any]], int]:
    """Pretraining records from an img2dataset folder: each ``<key>.jpg`` with a non-empty ``<key>.txt``.

    Returns:
        The records (image paths relative to ``root``) and how many images had no caption.
    """
    records: list[dict[str, Any]] = []
    uncaptioned = 0
    for image in sorted(folder.rglob("*.jpg")):
        text = image.with_suffix(".txt")
        caption = text.read_text(encoding="utf-8").strip() if text.is_file() else ""
        if caption:
            records.append({"image": image.relative_to(root).as_posix(), "caption": caption})
        else:
            uncaptioned += 1
    return records, uncaptioned


@CONVERTERS.register("albef_release", help="copy an ALBEF release file unchanged (validated on read-back)")
def _release(src: SourceInputs) -> Converted:
    return Converted({"file": src.inputs[0]})


@CONVERTERS.register("refer_refs", help="REFER refs(unc).p (read without running pickled code) -> refs JSON")
def _refer_refs(src: SourceInputs) -> Converted:
    from albef.data.formats_grounding import refs_to_json, safe_unpickle

    refs = safe_unpickle(src.inputs[0])
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise DataError(src.inputs[0], "expected a list of ref dicts")
    return Converted({"main": refs_to_json(refs)})


@CONVERTERS.register(
    "aro_excluded_relations",
    help="ARO's replication notebook -> the relations VG-Relation's macro leaves out",
)
def _aro_excluded(src: SourceInputs) -> Converted:
    from albef.data.formats_compositional import excluded_relations_of_notebook

    relations = excluded_relations_of_notebook(src.inputs[0])
    return Converted({"main": relations}, [f"{len(relations)} relations left out of the macro accuracy"])


@CONVERTERS.register("karpathy", help="Karpathy dataset_*.json -> retrieval train/val/test")
def _karpathy(src: SourceInputs) -> Converted:
    groups = karpathy_groups(src.inputs[0], src.options.get("image_dir"), src.options.get("id_field"))
    return Converted(
        {
            "train": train_layout(groups["train"]),
            "val": eval_layout(groups["val"]),
            "test": eval_layout(groups["test"]),
        }
    )


@CONVERTERS.register("coco_captions", help="official COCO captions_*.json (via pycocotools) -> eval layout")
def _coco_captions(src: SourceInputs) -> Converted:
    split = formats.read_coco_captions(src.inputs[0])
    groups = [
        (posixpath.join(src.options["image_dir"], img), i, caps) for img, i, caps in _eval_groups(split)
    ]
    return Converted({"main": eval_layout(groups)})


@CONVERTERS.register("maccap", help="MacCap Flickr30K split -> retrieval train or eval layout")
def _maccap(src: SourceInputs) -> Converted:
    groups = _eval_groups(formats.read_maccap_flickr(src.inputs[0], src.options["image_dir"]))
    layout = train_layout if src.options.get("layout") == "train" else eval_layout
    return Converted({"main": layout(groups)})


@CONVERTERS.register("vqa_v2", help="VQA v2 questions (+ annotations) -> ALBEF vqa_*.json")
def _vqa_v2(src: SourceInputs) -> Converted:
    annotations = src.inputs[1] if len(src.inputs) > 1 else None
    return Converted({"main": vqa_albef_records(formats.read_vqa_v2(src.inputs[0], annotations))})


@CONVERTERS.register(
    "vqa_v2_trainval", help="VQA v2 train (+ val) -> vqa_train/val.json and answer_list.json"
)
def _vqa_v2_trainval(src: SourceInputs) -> Converted:
    train = formats.read_vqa_v2(src.inputs[0], src.inputs[1])
    val_q, val_a = src.optional
    val = formats.read_vqa_v2(val_q, val_a) if val_q is not None and val_a is not None else []
    size = int(src.options.get("size", ANSWER_LIST_SIZE))
    answers = build_answer_list([*train, *val], size)
    payloads: dict[str, Payload] = {"train": vqa_albef_records(train), "answers": answers}
    notes = [] if val else ["answer list built from the training questions only (no val files)"]
    if val:
        payloads["val"] = vqa_albef_records(val)
    if len(answers) < size:
        notes.append(f"only {len(answers)} distinct majority answers, fewer than {size}")
    return Converted(payloads, notes)


@CONVERTERS.register("vg_qa", help="Visual Genome question_answers.json -> vg_qa.json")
def _vg_qa(src: SourceInputs) -> Converted:
    return Converted({"main": vg_albef_records(src.inputs[0], src.options.get("image_dir", "image"))})


@CONVERTERS.register("nlvr_lil", help="lil-lab NLVR2 JSON lines -> ALBEF nlvr_*.json")
def _nlvr_lil(src: SourceInputs) -> Converted:
    image_dir = src.options["image_dir"]
    folder = src.root / src.options["image_root"] / image_dir
    nested = src.options.get("nested") is True
    index = index_images(folder) if nested and folder.is_dir() else {}
    notes = []
    if nested and not index:
        notes.append(f"no images under {folder}: paths written as {image_dir}/<name>, without sub-folders")
    return Converted({"main": nlvr_albef_records(src.inputs[0], image_dir, index)}, notes)


@CONVERTERS.register("snli_ve", help="SNLI-VE JSON lines -> ALBEF ve_*.json")
def _snli_ve(src: SourceInputs) -> Converted:
    return Converted({"main": snli_ve_albef_records(src.inputs[0])})


@CONVERTERS.register("img2dataset", help="img2dataset folder (<key>.jpg + <key>.txt) -> pretraining list")
def _img2dataset(src: SourceInputs) -> Converted:
    if not src.inputs[0].is_dir():
        raise DataError(src.inputs[0], "expected an img2dataset output folder, found a file")
    records, uncaptioned = img2dataset_records(src.inputs[0], src.root)
    return Converted(
        {"main": records}, [f"{uncaptioned} image(s) without a caption skipped"] if uncaptioned else []
    )
