"""The official VQA accuracy (GT-Vision-Lab/VQA ``vqaEval.py``, current version), as pure functions.

What the official tool computes, step by step:

1. Every answer (prediction and the human answers) has ``\\n``/``\\t`` replaced by spaces and is stripped.
2. **Only when the human answers of a question disagree** (more than one distinct string after step 1) are
   the human answers *and* the prediction normalised (:func:`normalize_answer`): punctuation
   (:func:`strip_punctuation`), then lower-casing, number words to digits, articles dropped and
   apostrophe-less contractions restored (:func:`normalize_words`). When all humans agree, the prediction
   must equal their answer exactly: ``"Orange"`` scores 0 against ten ``"orange"``.
3. Accuracy of a question = the mean over the leave-one-annotator-out subsets (10 choose 9 for VQA v2) of
   ``min(1, matches among the others / 3)`` (:func:`answer_accuracy`).
4. Overall, per question type and per answer type: ``100 * sum / count`` over the questions, in annotation
   order, rounded to 2 decimals with the built-in ``round`` (:func:`round_official`). The tool was written
   for Python 2, whose ``round`` breaks an exact tie away from zero; the copies that ALBEF and LAVIS ship
   run under Python 3, whose ``round`` breaks it to even. The default, ``rounding="python3"``, gives the
   numbers the official code prints today (``78.125`` -> ``78.12``); ``rounding="python2"`` the original
   tool's (``78.13``).

Quirks kept for identical numbers: the period rule removes at most 32 periods (the official call passes
``re.UNICODE`` where ``count`` goes); its look-behind is mistyped as a look-ahead, so a period is removed
whenever no digit *follows* it; the contraction table has one reversed entry (``somebody'd`` becomes
``somebodyd``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from albef.evaluation.bootstrap import percent_metric
from albef.reporting.schema import Metric

Rounding = Literal["python3", "python2"]
"""How exact ties are rounded (module docstring, step 4)."""
ROUNDINGS: tuple[Rounding, ...] = ("python3", "python2")

PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
"""Characters handled by :func:`strip_punctuation`, in the official order (``'``, ``:``, ``.`` excluded)."""

NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
"""Words replaced by digits (``none`` counts as 0)."""

ARTICLES = frozenset({"a", "an", "the"})

_CONTRACTION_WORDS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't "
    "shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's "
    "something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've "
    "they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's "
    "where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've "
    "wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
)
_CANONICAL_CONTRACTIONS = tuple(_CONTRACTION_WORDS.split())
"""The contractions the official table restores. Each is reached from its spellings that miss exactly one
apostrophe (``dont`` -> ``don't``; ``couldnt've`` and ``couldn'tve`` -> ``couldn't've``; the spelling
without any apostrophe only when there is one). The table's capitalised keys (``Im``, ``Ive``...) can never
match lower-cased text and its identity entries change nothing, so neither is listed."""


def _one_apostrophe_dropped(word: str) -> list[str]:
    """``word`` with each of its apostrophes removed in turn (one spelling per apostrophe)."""
    return [word[:i] + word[i + 1 :] for i, char in enumerate(word) if char == "'"]


CONTRACTIONS: dict[str, str] = {
    **{variant: word for word in _CANONICAL_CONTRACTIONS for variant in _one_apostrophe_dropped(word)},
    "somebody'd": "somebodyd",  # the official table's one reversed entry
}
"""Word -> replacement applied by :func:`normalize_words` (after number words and articles)."""

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
MAX_PERIODS_REMOVED = 32
"""The official ``periodStrip.sub("", text, re.UNICODE)`` passes ``re.UNICODE`` (32) as the count."""

ROUND_DIGITS = 2


class QuestionIdMismatchError(ValueError):
    """Predictions and ground truth cover different questions; the message names the ids."""


def clean_whitespace(text: str) -> str:
    """Replace newlines and tabs with spaces and strip both ends (applied to every answer first)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def strip_punctuation(text: str) -> str:
    """The official punctuation rule.

    Each character of :data:`PUNCTUATION` is deleted if, in the *input* text, it touches a space (``p + ' '``
    or ``' ' + p`` occurs) or the text holds a digit-comma-digit group anywhere; otherwise it becomes a space.
    Then every period not followed by a digit is deleted (at most :data:`MAX_PERIODS_REMOVED`), so decimal
    points survive: ``"2.5"`` stays, ``"yes."`` becomes ``"yes"``, ``"1,000"`` becomes ``"1000"``.
    """
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for char in PUNCTUATION:
        touches_space = char + " " in text or " " + char in text
        out = out.replace(char, "" if touches_space or delete_all else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=MAX_PERIODS_REMOVED)


def normalize_words(text: str) -> str:
    """Lower-case, split on whitespace, map number words to digits, drop articles, restore contractions."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str) -> str:
    """The full official normalisation: :func:`strip_punctuation` then :func:`normalize_words`."""
    return normalize_words(strip_punctuation(text))


def answer_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """The official accuracy of one prediction, in [0, 1].

    Args:
        prediction: The predicted answer string.
        human_answers: Every annotator's answer (10 for VQA v2), in annotation order.

    Returns:
        The mean over the leave-one-annotator-out subsets of ``min(1, matches / 3)``.

    Raises:
        ValueError: If ``human_answers`` is empty.
    """
    if not human_answers:
        raise ValueError("a question needs at least one human answer to be scored")
    humans = [clean_whitespace(a) for a in human_answers]
    predicted = clean_whitespace(prediction)
    if len(set(humans)) > 1:  # the official tool normalises only when the annotators disagree
        humans = [normalize_answer(a) for a in humans]
        predicted = normalize_answer(predicted)
    matches = [a == predicted for a in humans]
    total = sum(matches)
    subsets = [min(1, float(total - hit) / 3) for hit in matches]  # leave annotator i out
    return float(sum(subsets)) / len(subsets)


def round_official(value: float, digits: int = ROUND_DIGITS, rounding: Rounding = "python3") -> float:
    """Round as the official tool's ``round`` does under ``rounding``'s Python.

    Both round the exact binary value correctly; they differ on exact ties only: Python 3 breaks them to even
    (``round(0.125, 2) == 0.12``), Python 2.7 away from zero (0.13).
    """
    if rounding == "python3":
        return float(round(value, digits))
    if rounding == "python2":
        return float(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
    raise ValueError(f"unknown rounding {rounding!r}; valid: {', '.join(ROUNDINGS)}")


def percent(values: Sequence[float], digits: int = ROUND_DIGITS, rounding: Rounding = "python3") -> float:
    """``100 * sum / count`` summed left to right as the official tool, then :func:`round_official`."""
    return round_official(100 * float(sum(values)) / len(values), digits, rounding)


@dataclass(frozen=True)
class GroundTruth:
    """The human answers of one question.

    Attributes:
        question_id: The official question id.
        answers: Every annotator's answer, in annotation order.
        question_type: VQA v2 ``question_type`` (``None`` when the annotation lacks it).
        answer_type: VQA v2 ``answer_type`` (``yes/no``, ``number``, ``other``; ``None`` when absent).
    """

    question_id: int
    answers: tuple[str, ...]
    question_type: str | None = None
    answer_type: str | None = None


@dataclass
class VQAAccuracy:
    """The official accuracy of a result set.

    Attributes:
        overall: Percent, rounded as the official tool.
        per_question_type: Question type -> percent (first-appearance order).
        per_answer_type: Answer type -> percent.
        per_question: Question id -> unrounded accuracy in [0, 1].
        untyped: Questions without a question or answer type (left out of that breakdown).
        rounding: How exact ties were rounded.
    """

    overall: float
    per_question_type: dict[str, float] = field(default_factory=dict)
    per_answer_type: dict[str, float] = field(default_factory=dict)
    per_question: dict[int, float] = field(default_factory=dict)
    untyped: int = 0
    rounding: Rounding = "python3"

    def official_dict(self) -> dict[str, Any]:
        """``{"overall", "perQuestionType", "perAnswerType"}``: the official ``VQAEval.accuracy``."""
        return {
            "overall": self.overall,
            "perQuestionType": dict(self.per_question_type),
            "perAnswerType": dict(self.per_answer_type),
        }


def _listed(ids: Iterable[int], limit: int = 10) -> str:
    """``"3 (1, 2, 5)"``: a count and the first ``limit`` sorted ids."""
    ordered = sorted(ids)
    shown = ", ".join(str(i) for i in ordered[:limit])
    more = f", ... {len(ordered) - limit} more" if len(ordered) > limit else ""
    return f"{len(ordered)} ({shown}{more})"


def check_question_ids(predicted: Iterable[int], expected: Iterable[int]) -> None:
    """Raise :class:`QuestionIdMismatchError` naming the ids missing from or extra in ``predicted``."""
    have, want = set(predicted), set(expected)
    problems = []
    if want - have:
        problems.append(f"missing answers for {_listed(want - have)} question id(s)")
    if have - want:
        problems.append(f"{_listed(have - want)} question id(s) not in the ground truth")
    if problems:
        raise QuestionIdMismatchError("; ".join(problems))


def _grouped(pairs: Iterable[tuple[str | None, float]], rounding: Rounding) -> tuple[dict[str, float], int]:
    """Percent per group (first-appearance order) and the number of values without a group."""
    groups: dict[str, list[float]] = {}
    missing = 0
    for name, value in pairs:
        if name is None:
            missing += 1
        else:
            groups.setdefault(name, []).append(value)
    return {name: percent(values, rounding=rounding) for name, values in groups.items()}, missing


def vqa_accuracy(
    predictions: Mapping[int, str], truths: Sequence[GroundTruth], rounding: Rounding = "python3"
) -> VQAAccuracy:
    """Score predictions exactly as the official ``VQAEval.evaluate``.

    Args:
        predictions: Question id -> predicted answer; must cover exactly the ids of ``truths``.
        truths: The ground truth, in annotation-file order (the order of the official sums).
        rounding: How exact ties are rounded (``python3``: as the official code runs today).

    Returns:
        The :class:`VQAAccuracy`.

    Raises:
        QuestionIdMismatchError: Missing or extra question ids (named).
        ValueError: ``truths`` is empty or repeats a question id.
    """
    if not truths:
        raise ValueError("no questions to score")
    ids = [t.question_id for t in truths]
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:
        raise ValueError(f"the ground truth repeats question id(s) {_listed(repeated)}")
    check_question_ids(predictions, ids)
    scores = {t.question_id: answer_accuracy(predictions[t.question_id], t.answers) for t in truths}
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; valid: {', '.join(ROUNDINGS)}")
    by_question, untyped_q = _grouped(((t.question_type, scores[t.question_id]) for t in truths), rounding)
    by_answer, untyped_a = _grouped(((t.answer_type, scores[t.question_id]) for t in truths), rounding)
    return VQAAccuracy(
        overall=percent(list(scores.values()), rounding=rounding),
        per_question_type=by_question,
        per_answer_type=by_answer,
        per_question=scores,
        untyped=max(untyped_q, untyped_a),
        rounding=rounding,
    )


QUESTION_TYPE = "question_type"
ANSWER_TYPE = "answer_type"
"""The metric groups of the per-type accuracies."""


def accuracy_metrics(accuracy: VQAAccuracy, truths: Sequence[GroundTruth]) -> dict[str, Metric]:
    """``overall`` plus ``answer_type/<t>`` and ``question_type/<t>`` metrics (grouped), in percent: the
    official rounded values, each with its question count and a bootstrap interval over its questions."""
    scores = accuracy.per_question
    metrics = {"overall": percent_metric([scores[t.question_id] for t in truths], accuracy.overall)}
    for group, values, type_of in (
        (ANSWER_TYPE, accuracy.per_answer_type, lambda t: t.answer_type),
        (QUESTION_TYPE, accuracy.per_question_type, lambda t: t.question_type),
    ):
        for name, value in values.items():
            members = [scores[t.question_id] for t in truths if type_of(t) == name]
            metrics[f"{group}/{name}"] = percent_metric(members, value, group)
    return metrics
