"""Readers for the VQA formats: ALBEF's ``vqa_*.json``/``vg_qa.json``, ``answer_list.json`` and VQA v2.

Answer weights follow the official ``VQA.py``: for a ``vqa`` question each distinct answer weighs
count / number of answers; a ``vg`` question has one answer of weight 0.5 (spec §4.1, ALBEF#42).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from albef.data.errors import DataError
from albef.data.formats_base import PathLike, Record, describe, load_json, read_records, top_level_object
from albef.data.records import VQARecord

VG_ANSWER_WEIGHT = 0.5
"""Weight of the single answer of a Visual Genome question (the official down-weighting)."""

VQA_DATASETS: dict[str, str] = {"vqa": "vqa", "vg": "vg"}

V2_IMAGE_TEMPLATE = "{subtype}/COCO_{subtype}_{image_id:012d}.jpg"
"""Image path of a VQA v2 question, from the file's ``data_subtype`` and the question's ``image_id``."""


def vqa_answer_weights(answers: Sequence[str]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Distinct answers (in order of first appearance) and their official weights (count / total).

    Args:
        answers: All annotator answers of one question (non-empty).

    Returns:
        ``(distinct answers, weights)``; the weights sum to 1.

    Raises:
        ValueError: If ``answers`` is empty.
    """
    if not answers:
        raise ValueError("a VQA question needs at least one answer to weight")
    counts = Counter(answers)  # insertion-ordered: first appearance
    total = len(answers)
    return tuple(counts), tuple(count / total for count in counts.values())


def _vqa_train_record(rec: Record) -> VQARecord:
    dataset = rec.choice("dataset", VQA_DATASETS)
    if dataset == "vqa":
        raw_answers = rec.string_list("answer")
        answers, weights = vqa_answer_weights(raw_answers)
    else:
        raw_answers = (rec.string("answer"),)
        answers, weights = raw_answers, (VG_ANSWER_WEIGHT,)
    return VQARecord(
        question_id=rec.optional_integer("question_id"),
        question=rec.nonblank("question"),
        image=rec.nonblank("image"),
        dataset=dataset,
        answers=answers,
        weights=weights,
        raw_answers=raw_answers,
    )


def read_vqa_train(path: PathLike) -> list[VQARecord]:
    """Read an ALBEF VQA training file (``vqa_train.json``, ``vqa_val.json``, ``vg_qa.json``).

    ``dataset`` is required; ``answer`` is a list of strings for ``vqa`` and a single string for ``vg``.

    Args:
        path: The JSON file.

    Returns:
        One record per question, with the official answer weights.
    """
    return [_vqa_train_record(rec) for rec in read_records(path)]


def _vqa_test_record(rec: Record) -> VQARecord:
    dataset = rec.choice("dataset", VQA_DATASETS) if rec.has("dataset") else "vqa"
    return VQARecord(
        question_id=rec.integer("question_id"),
        question=rec.nonblank("question"),
        image=rec.nonblank("image"),
        dataset=dataset,
        answers=(),
        weights=(),
    )


def read_vqa_test(path: PathLike) -> list[VQARecord]:
    """Read an ALBEF VQA test file (``vqa_test.json``): ``question_id`` is required, there is no answer.

    Args:
        path: The JSON file.

    Returns:
        One record per question, with empty answers (``dataset`` defaults to ``vqa``).
    """
    return [_vqa_test_record(rec) for rec in read_records(path)]


def read_answer_list(path: PathLike) -> list[str]:
    """Read ``answer_list.json``: a JSON list of unique answer strings (the VQA candidate set).

    Args:
        path: The JSON file.

    Returns:
        The answers, in file order.
    """
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(
            path, f"expected a JSON list of answer strings at the top level, got {describe(data)}"
        )
    first_seen: dict[str, int] = {}
    for index, answer in enumerate(data):
        if not isinstance(answer, str):
            raise DataError(path, f"expected an answer string, got {describe(answer)}", index=index)
        if answer in first_seen:
            message = f"duplicate answer {answer!r} (first at record {first_seen[answer]})"
            raise DataError(path, message, index=index)
        first_seen[answer] = index
    return list(data)


def _v2_annotations(path: PathLike) -> dict[int, Record]:
    """Validate a VQA v2 annotation file; map question id to its annotation record."""
    by_question: dict[int, Record] = {}
    for rec in top_level_object(path).objects("annotations"):
        question_id = rec.integer("question_id")
        if question_id in by_question:
            raise rec.error("question_id", f"duplicate annotation for question {question_id}")
        for answer in rec.objects("answers"):
            answer.string("answer")
        if not rec.raw["answers"]:
            raise rec.error("answers", "empty list")
        rec.optional_string("question_type")
        rec.optional_string("answer_type")
        by_question[question_id] = rec
    return by_question


def _v2_record(question: Record, image: str, annotation: Record | None) -> VQARecord:
    raw_answers: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    if annotation is not None:
        raw_answers = tuple(item["answer"] for item in annotation.raw["answers"])
        answers, weights = vqa_answer_weights(raw_answers)
    return VQARecord(
        question_id=question.integer("question_id"),
        question=question.nonblank("question"),
        image=image,
        dataset="vqa",
        answers=answers,
        weights=weights,
        question_type=annotation.optional_string("question_type") if annotation else None,
        answer_type=annotation.optional_string("answer_type") if annotation else None,
        raw_answers=raw_answers,
    )


def read_vqa_v2(
    questions_path: PathLike,
    annotations_path: PathLike | None = None,
    image_template: str = V2_IMAGE_TEMPLATE,
) -> list[VQARecord]:
    """Read the official VQA v2 questions file, joined with its annotations file when given.

    Every question needs an annotation and every annotation a question. ``question_type``/``answer_type`` may
    be absent (then ``None``); an annotation's ``image_id``, when present, must match its question's.

    Args:
        questions_path: ``v2_OpenEnded_mscoco_<subtype>_questions.json`` (``{"data_subtype", "questions"}``).
        annotations_path: ``v2_mscoco_<subtype>_annotations.json``, or ``None`` for test questions.
        image_template: Format string of the image path with fields ``subtype`` and ``image_id``.

    Returns:
        One record per question, in the questions file's order.
    """
    top = top_level_object(questions_path)
    subtype = top.nonblank("data_subtype")
    annotations = _v2_annotations(annotations_path) if annotations_path is not None else None
    records: list[VQARecord] = []
    seen: set[int] = set()
    for question in top.objects("questions"):
        question_id, image_id = question.integer("question_id"), question.integer("image_id")
        if question_id in seen:
            raise question.error("question_id", f"duplicate question {question_id}")
        seen.add(question_id)
        annotation = None
        if annotations is not None:
            annotation = annotations.pop(question_id, None)
            if annotation is None:
                raise question.error("question_id", f"no annotation for question {question_id}")
            if annotation.has("image_id") and annotation.integer("image_id") != image_id:
                raise annotation.error(
                    "image_id", f"{annotation.raw['image_id']} differs from the question's {image_id}"
                )
        image = image_template.format(subtype=subtype, image_id=image_id)
        records.append(_v2_record(question, image, annotation))
    if annotations:
        orphan = next(iter(annotations.values()))
        raise orphan.error(
            "question_id", f"no such question in {questions_path} ({len(annotations)} orphan(s))"
        )
    return records
