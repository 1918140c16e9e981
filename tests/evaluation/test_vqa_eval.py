"""The official VQA accuracy, checked on hand-computed cases: every normalisation rule, the rule for when
answers are normalised at all, the leave-one-annotator-out average, grouping and the official rounding."""

from __future__ import annotations

import pytest

from albef.evaluation.vqa import accuracy_metrics
from albef.evaluation.vqa_eval import (
    CONTRACTIONS,
    GroundTruth,
    QuestionIdMismatchError,
    answer_accuracy,
    normalize_answer,
    normalize_words,
    percent,
    round_official,
    strip_punctuation,
    vqa_accuracy,
)

DISAGREE = ["x"] * 9 + ["y"]
"""Nine annotators agree, one does not: the answers get normalised."""


# -- normalisation rules ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("t-shirt", "t shirt"),  # punctuation inside a word becomes a space...
        ("t-shirt - red", "tshirt  red"),  # ...but is deleted everywhere once it touches a space somewhere
        ("red,blue", "red blue"),
        ("1,000", "1000"),  # a digit-comma-digit group deletes every punctuation mark
        ("1,000 (approx)", "1000 approx"),
        ("yes!", "yes "),
        ("what?", "what "),
        ("yes.", "yes"),  # a period not followed by a digit is deleted
        ("2.5", "2.5"),  # a decimal point survives
        ("e.g.", "eg"),
        ("8:00", "8:00"),  # ':' and "'" are not punctuation here
        ("don't", "don't"),
        ("a*b", "a*b"),  # nor is '*'
        ("@home", " home"),
        ("." * 40, "." * 8),  # at most 32 periods go (the official count quirk)
    ],
)
def test_strip_punctuation(text: str, expected: str) -> None:
    assert strip_punctuation(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("two", "2"),
        ("Ten dogs", "10 dogs"),
        ("none", "0"),
        ("zero", "0"),
        ("eleven", "eleven"),  # only zero..ten (and none) are mapped
        ("a dog", "dog"),
        ("The  Red   car", "red car"),  # articles dropped, whitespace runs collapsed
        ("an apple a day", "apple day"),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("couldnt've", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("couldntve", "couldntve"),  # two apostrophes missing: not in the official table
        ("yall'd've", "y'all'd've"),
        ("twas", "'twas"),
        ("somebody'd", "somebodyd"),  # the official table's reversed entry
        ("im", "im"),  # the table's capitalised keys never match lower-cased text
    ],
)
def test_normalize_words(text: str, expected: str) -> None:
    assert normalize_words(text) == expected


def test_the_contraction_table_has_the_official_size() -> None:
    # 120 official entries minus 4 unreachable capitalised keys and 2 identity entries.
    assert len(CONTRACTIONS) == 114
    assert CONTRACTIONS["dont"] == "don't" and "don't" not in CONTRACTIONS


def test_normalize_answer_combines_both_steps() -> None:
    assert normalize_answer("Two Dogs!") == "2 dogs"
    assert normalize_answer("The T-Shirt.") == "t shirt"


# -- when answers are normalised ------------------------------------------------------------------------------
def test_unanimous_humans_require_an_exact_match() -> None:
    humans = ["orange"] * 10
    assert answer_accuracy("orange", humans) == 1.0
    assert answer_accuracy(" orange\n", humans) == 1.0  # whitespace is always cleaned
    assert answer_accuracy("Orange", humans) == 0.0  # but nothing else when the annotators agree
    assert answer_accuracy("an orange", humans) == 0.0
    assert answer_accuracy("orange.", humans) == 0.0


def test_disagreeing_humans_normalise_both_sides() -> None:
    humans = ["two"] * 4 + ["2"] * 3 + ["Two!"] * 3
    assert answer_accuracy("TWO", humans) == 1.0
    assert answer_accuracy("the dog", ["dog"] * 9 + ["cat"]) == 1.0
    assert answer_accuracy("the dog", ["the dog"] * 10) == 1.0
    assert answer_accuracy("dog", ["the dog"] * 10) == 0.0  # unanimous: "the" is not dropped


def test_whitespace_cleaning_happens_before_the_unanimity_test() -> None:
    # "red" and " red\t" are one answer once cleaned, so the humans agree and "Red" is not lower-cased.
    assert answer_accuracy("Red", ["red"] * 5 + [" red\t"] * 5) == 0.0


# -- the 10-choose-9 average -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("matches", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_leave_one_annotator_out_average(matches: int, expected: float) -> None:
    # m matches: leaving a matching annotator out leaves m-1, any other leaves m; each subset scores
    # min(1, n/3). m=3: (3 * 2/3 + 7 * 1) / 10 = 0.9.
    humans = ["yes"] * matches + ["no"] * (10 - matches)
    if matches == 10:
        humans = ["yes"] * 10
    assert answer_accuracy("yes", humans) == pytest.approx(expected, abs=1e-12)


def test_accuracy_with_other_annotator_counts() -> None:
    # 3 annotators, 1 match: subsets {others}: leaving the match out gives 0, else 1/3 -> (0 + 2/3) / 3.
    assert answer_accuracy("a", ["a", "b", "c"]) == pytest.approx(2 / 9)
    with pytest.raises(ValueError, match="at least one"):
        answer_accuracy("a", [])


# -- aggregation and rounding -------------------------------------------------------------------------------
def _truths() -> list[GroundTruth]:
    return [
        GroundTruth(1, ("yes",) * 10, "is the", "yes/no"),
        GroundTruth(2, ("2",) * 2 + ("3",) * 8, "how many", "number"),
        GroundTruth(3, ("red",) * 10, "what color is the", "other"),
        GroundTruth(4, ("no",) * 10, "is the", "yes/no"),
    ]


def test_overall_and_per_type_accuracy() -> None:
    result = vqa_accuracy({1: "yes", 2: "two", 3: "blue", 4: "yes"}, _truths())
    assert result.per_question == pytest.approx({1: 1.0, 2: 0.6, 3: 0.0, 4: 0.0})
    assert result.overall == 40.0  # 100 * 1.6 / 4
    assert result.per_answer_type == {"yes/no": 50.0, "number": 60.0, "other": 0.0}
    assert list(result.per_question_type) == ["is the", "how many", "what color is the"]  # first appearance
    assert result.per_question_type["is the"] == 50.0
    assert result.official_dict() == {
        "overall": 40.0,
        "perQuestionType": {"is the": 50.0, "how many": 60.0, "what color is the": 0.0},
        "perAnswerType": {"yes/no": 50.0, "number": 60.0, "other": 0.0},
    }


def test_report_metrics_carry_question_counts_and_intervals() -> None:
    truths = _truths()
    metrics = accuracy_metrics(vqa_accuracy({1: "yes", 2: "two", 3: "blue", 4: "yes"}, truths), truths)
    overall = metrics["overall"]
    assert (overall.value, overall.n) == (40.0, 4)
    assert overall.ci_low is not None and overall.ci_high is not None
    assert 0.0 <= overall.ci_low < 40.0 < overall.ci_high <= 100.0  # resampled over the 4 questions
    assert metrics["answer_type/number"].n == 1 and metrics["answer_type/number"].half_width == 0.0
    assert (metrics["answer_type/yes/no"].n, metrics["answer_type/yes/no"].group) == (2, "answer_type")


def test_rounding_python3_by_default_python2_on_request() -> None:
    # Exact ties: Python 3's round (the official code as run today) goes to even, Python 2's away from zero.
    assert round_official(0.125) == 0.12
    assert round_official(0.125, rounding="python2") == 0.13
    assert round_official(78.125) == 78.12 and round_official(78.125, rounding="python2") == 78.13
    # Not ties: both agree (2.675 is stored below the tie, so both give 2.67).
    for rounding in ("python3", "python2"):
        assert round_official(2 / 3 * 100, rounding=rounding) == 66.67  # type: ignore[arg-type]
        assert round_official(12.344999, rounding=rounding) == 12.34  # type: ignore[arg-type]
        assert round_official(2.675, rounding=rounding) == 2.67  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown rounding 'banker'"):
        round_official(1.0, rounding="banker")  # type: ignore[arg-type]


def test_an_exact_tie_in_overall_accuracy_follows_the_rounding() -> None:
    # 625 of 800 questions right: 100 * 625 / 800 = 78.125 exactly.
    truths = [GroundTruth(i, ("a",) * 10, "what", "other") for i in range(800)]
    answers = {i: "a" if i < 625 else "b" for i in range(800)}
    default = vqa_accuracy(answers, truths)
    assert default.overall == 78.12 and default.per_answer_type == {"other": 78.12}
    assert default.rounding == "python3"
    original = vqa_accuracy(answers, truths, rounding="python2")
    assert original.overall == 78.13 and original.per_question_type == {"what": 78.13}
    assert percent([1.0] + [0.0] * 799) == 0.12  # 0.125
    assert percent([1.0] + [0.0] * 799, rounding="python2") == 0.13


def test_questions_without_types_count_in_overall_only() -> None:
    truths = [GroundTruth(1, ("a",) * 10), GroundTruth(2, ("b",) * 10, "what", "other")]
    result = vqa_accuracy({1: "a", 2: "x"}, truths)
    assert result.overall == 50.0
    assert result.per_answer_type == {"other": 0.0} and result.untyped == 1


def test_missing_and_extra_question_ids_are_named() -> None:
    with pytest.raises(QuestionIdMismatchError, match=r"missing answers for 2 \(3, 4\)"):
        vqa_accuracy({1: "yes", 2: "2"}, _truths())
    with pytest.raises(QuestionIdMismatchError, match=r"1 \(99\) question id\(s\) not in the ground truth"):
        vqa_accuracy({1: "a", 2: "a", 3: "a", 4: "a", 99: "a"}, _truths())
    many = {i: "a" for i in range(100, 120)}
    with pytest.raises(QuestionIdMismatchError, match=r"20 \(100, 101, .*109, \.\.\. 10 more\)"):
        vqa_accuracy({**many, 1: "a", 2: "a", 3: "a", 4: "a"}, _truths())


def test_repeated_ground_truth_is_an_error() -> None:
    with pytest.raises(ValueError, match="repeats question id"):
        vqa_accuracy({1: "a"}, [GroundTruth(1, ("a",)), GroundTruth(1, ("a",))])
