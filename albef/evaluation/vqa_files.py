"""VQA result files and ground truth: the evaluation-server result file (written once per question, read back
with every record checked), the merge of the ranks' answers, and the official annotations.

The result file is the official server format ``[{"question_id": int, "answer": str}, ...]``:
:func:`write_result_file` refuses an incomplete set, naming the missing ids. Scoring is
:mod:`albef.evaluation.vqa_eval`; the ranking that makes the answers is :mod:`albef.evaluation.vqa`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from albef.data.errors import DataError
from albef.data.formats_base import describe, load_json, top_level_object
from albef.data.records import VQARecord
from albef.evaluation.vqa_eval import ANSWER_TYPE, QUESTION_TYPE, GroundTruth, check_question_ids
from albef.fileio import atomic_write


class ConflictingAnswersError(ValueError):
    """A question id came back with two different answers; the message names it."""


# -- result files -------------------------------------------------------------------------------------------
def merge_answers(parts: Iterable[Iterable[tuple[int, str]]]) -> dict[int, str]:
    """Merge ``(question_id, answer)`` pairs from several shards, keeping each question once.

    A question repeated with the same answer (the padded evaluation sampler) is kept once; a question
    repeated with different answers is an error.

    Raises:
        ConflictingAnswersError: Naming the first conflicting question id.
    """
    merged: dict[int, str] = {}
    for part in parts:
        for question_id, answer in part:
            previous = merged.setdefault(question_id, answer)
            if previous != answer:
                raise ConflictingAnswersError(
                    f"question {question_id} has two different answers: {previous!r} and {answer!r}"
                )
    return merged


def server_records(answers: Mapping[int, str], question_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The evaluation-server list, one entry per question in ``question_ids`` order.

    Raises:
        QuestionIdMismatchError: ``answers`` misses some of ``question_ids`` or has others (both named).
    """
    check_question_ids(answers, question_ids)
    return [{"question_id": int(qid), "answer": answers[qid]} for qid in question_ids]


def write_result_file(path: str | Path, answers: Mapping[int, str], question_ids: Sequence[int]) -> Path:
    """Write the server result file atomically; an incomplete answer set writes nothing and raises.

    Args:
        path: Destination (``.json``).
        answers: Question id -> answer.
        question_ids: Every question of the split, in file order.

    Returns:
        ``path``.

    Raises:
        QuestionIdMismatchError: Missing (or foreign) question ids, listed.
    """
    records = server_records(answers, question_ids)
    text = json.dumps(records, ensure_ascii=False) + "\n"

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    return atomic_write(path, write)


def read_result_file(path: str | Path) -> dict[int, str]:
    """Read a server result file: a list of ``{"question_id": int, "answer": str}``.

    A question may repeat with the same answer (merged files of padded samplers); the official loader keeps
    the last, which is the same answer.

    Raises:
        DataError: Not a list, a malformed entry, or a question repeated with a different answer.
    """
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON list of results at the top level, got {describe(data)}")
    answers: dict[int, str] = {}
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DataError(path, f"expected an object, got {describe(entry)}", index=index)
        qid, answer = entry.get("question_id"), entry.get("answer")
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise DataError(
                path, f"expected an integer, got {describe(qid)}", index=index, field="question_id"
            )
        if not isinstance(answer, str):
            raise DataError(path, f"expected a string, got {describe(answer)}", index=index, field="answer")
        if answers.setdefault(qid, answer) != answer:
            message = f"question {qid} repeated with a different answer ({answers[qid]!r} before)"
            raise DataError(path, message, index=index, field="answer")
    return answers


def read_vqa_annotations(annotations: str | Path, questions: str | Path | None = None) -> list[GroundTruth]:
    """Read an official VQA v2 annotation file as :class:`GroundTruth`, in file order.

    Args:
        annotations: ``{"annotations": [{"question_id", "answers": [{"answer"}, ...], "question_type",
            "answer_type"}, ...]}``; the two types may be absent.
        questions: The matching questions file; when given, its question ids must be the annotations' ids.

    Raises:
        DataError: A malformed file, a repeated question id, or question ids that differ between the files.
    """
    truths: list[GroundTruth] = []
    seen: set[int] = set()
    for rec in top_level_object(annotations).objects("annotations"):
        qid = rec.integer("question_id")
        if qid in seen:
            raise rec.error("question_id", f"duplicate annotation for question {qid}")
        seen.add(qid)
        answers = tuple(item.string("answer") for item in rec.objects("answers"))
        if not answers:
            raise rec.error("answers", "empty list")
        types = rec.optional_string(QUESTION_TYPE), rec.optional_string(ANSWER_TYPE)
        truths.append(GroundTruth(qid, answers, *types))
    if questions is not None:
        asked = [q.integer("question_id") for q in top_level_object(questions).objects("questions")]
        try:
            check_question_ids(seen, asked)
        except ValueError as err:
            raise DataError(annotations, f"does not match {questions}: {err}") from None
    return truths


def ground_truth_of(records: Sequence[VQARecord]) -> list[GroundTruth] | None:
    """Ground truth from records that carry their annotators' answers (``vqa_val.json``), else ``None``."""
    truths = [
        GroundTruth(r.question_id, r.raw_answers, r.question_type, r.answer_type)
        for r in records
        if r.question_id is not None and r.raw_answers
    ]
    return truths if truths and len(truths) == len(records) else None
