"""VQA result files and annotations: the real VQA v2 sample, de-duplication, completeness, ``vqa-score``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from albef.cli.main import main
from albef.data.errors import DataError
from albef.data.formats import read_answer_list
from albef.evaluation.vqa_eval import QuestionIdMismatchError, normalize_answer, vqa_accuracy
from albef.evaluation.vqa_files import (
    ConflictingAnswersError,
    merge_answers,
    read_result_file,
    read_vqa_annotations,
    write_result_file,
)

QUESTIONS = "vqav2_train2014_3q_questions__allennlp_fixture.json"
ANNOTATIONS = "vqav2_train2014_3q_annotations__allennlp_fixture.json"
ANSWER_LIST = "vqa_answer_list_3128__albef_format__CVLR-RD.json"
IDS = (458752000, 458752001, 458752002)
"""The sample's humans: 0 = net x6, netting, mesh, pitcher, orange; 1 = pitcher x9, catcher; 2 = orange x10."""


@pytest.fixture(scope="module")
def real(real_data_dir: Path) -> tuple[Path, Path]:
    return real_data_dir / QUESTIONS, real_data_dir / ANNOTATIONS


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# -- the real VQA v2 sample ---------------------------------------------------------------------------------
def test_real_annotations_read_in_file_order(real: tuple[Path, Path]) -> None:
    truths = read_vqa_annotations(real[1], real[0])
    assert [t.question_id for t in truths] == list(IDS)
    assert truths[0].answers[:4] == ("net", "net", "net", "netting") and len(truths[0].answers) == 10
    assert all(t.question_type is None and t.answer_type is None for t in truths)  # the sample lacks them


@pytest.mark.parametrize(
    ("answers", "per_question", "overall"),
    [
        (("net", "pitcher", "orange"), (1.0, 1.0, 1.0), 100.0),
        (("Net", "the pitcher", "orange"), (1.0, 1.0, 1.0), 100.0),  # normalised: humans disagree on 0 and 1
        (
            ("netting", "catcher", "Orange"),
            (0.3, 0.3, 0.0),
            20.0,
        ),  # "Orange": unanimous humans, no lower-casing
        (("mesh", "Pitcher!", "oranges"), (0.3, 1.0, 0.0), 43.33),
        (("pitcher", "net", "orange "), (0.3, 0.0, 1.0), 43.33),
    ],
)
def test_real_sample_accuracy(
    real: tuple[Path, Path], answers: tuple[str, ...], per_question: tuple[float, ...], overall: float
) -> None:
    result = vqa_accuracy(dict(zip(IDS, answers, strict=True)), read_vqa_annotations(real[1], real[0]))
    assert [result.per_question[i] for i in IDS] == pytest.approx(per_question)
    assert result.overall == overall
    assert result.untyped == 3 and result.per_answer_type == {}


def test_the_real_answer_list_is_already_normalised(real_data_dir: Path) -> None:
    answers = read_answer_list(real_data_dir / ANSWER_LIST)
    assert len(answers) == 3128
    assert [a for a in answers if normalize_answer(a) != a] == []


def test_vqa_score_command(
    real: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = _write(
        tmp_path / "r.json",
        [{"question_id": i, "answer": a} for i, a in zip(IDS, ("netting", "catcher", "Orange"), strict=True)],
    )
    out = tmp_path / "scores" / "s.json"
    argv = ["evaluate", "vqa-score", "--results", str(results), "--questions", str(real[0])]
    assert main([*argv, "--annotations", str(real[1]), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {
        "overall": 20.0,
        "perQuestionType": {},
        "perAnswerType": {},
        "rounding": "python3",
    }
    captured = capsys.readouterr()
    assert "overall" in captured.out and "20.00" in captured.out
    assert "3 question(s) have no question/answer type" in captured.err


@pytest.mark.parametrize(("rounding", "expected"), [(None, 78.12), ("python3", 78.12), ("python2", 78.13)])
def test_vqa_score_rounds_an_exact_tie_as_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rounding: str | None, expected: float
) -> None:
    # 625 of 800 right: 78.125 exactly, which Python 3 rounds to even and Python 2 away from zero.
    ids = range(800)
    questions = _write(
        tmp_path / "q.json", {"questions": [{"question_id": i, "image_id": i, "question": "q?"} for i in ids]}
    )
    annotations = _write(
        tmp_path / "a.json",
        {
            "annotations": [
                {
                    "question_id": i,
                    "image_id": i,
                    "question_type": "what",
                    "answer_type": "other",
                    "multiple_choice_answer": "a",
                    "answers": [
                        {"answer": "a", "answer_confidence": "yes", "answer_id": j} for j in range(10)
                    ],
                }
                for i in ids
            ]
        },
    )
    results = _write(
        tmp_path / "r.json", [{"question_id": i, "answer": "a" if i < 625 else "b"} for i in ids]
    )
    out = tmp_path / "s.json"
    argv = ["evaluate", "vqa-score", "--results", str(results), "--questions", str(questions)]
    argv += ["--annotations", str(annotations), "--out", str(out)]
    assert main(argv + ([] if rounding is None else ["--rounding", rounding])) == 0
    scores = json.loads(out.read_text())
    assert scores["overall"] == expected and scores["perAnswerType"] == {"other": expected}
    assert scores["rounding"] == (rounding or "python3")
    assert f"rounding: {rounding or 'python3'}" in capsys.readouterr().out


def test_vqa_score_names_missing_and_extra_ids(
    real: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = _write(
        tmp_path / "r.json", [{"question_id": IDS[0], "answer": "net"}, {"question_id": 7, "answer": "x"}]
    )
    argv = ["evaluate", "vqa-score", "--results", str(results), "--questions", str(real[0])]
    assert main([*argv, "--annotations", str(real[1])]) == 3
    err = capsys.readouterr().err
    assert "missing answers for 2 (458752001, 458752002)" in err and "1 (7) question id(s) not in" in err


# -- result files -------------------------------------------------------------------------------------------
def test_merge_keeps_each_question_once() -> None:
    # A padded distributed sampler repeats questions across ranks with the same answer.
    merged = merge_answers([[(1, "yes"), (2, "no")], [(3, "2"), (1, "yes")]])
    assert merged == {1: "yes", 2: "no", 3: "2"}
    with pytest.raises(ConflictingAnswersError, match="question 1 has two different answers"):
        merge_answers([[(1, "yes")], [(1, "no")]])


def test_result_file_is_written_once_per_question_in_split_order(tmp_path: Path) -> None:
    path = write_result_file(
        tmp_path / "r.json", merge_answers([[(3, "c"), (1, "a")], [(2, "b"), (3, "c")]]), [1, 2, 3]
    )
    assert json.loads(path.read_text()) == [
        {"question_id": 1, "answer": "a"},
        {"question_id": 2, "answer": "b"},
        {"question_id": 3, "answer": "c"},
    ]
    assert read_result_file(path) == {1: "a", 2: "b", 3: "c"}


def test_an_incomplete_result_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    with pytest.raises(QuestionIdMismatchError, match=r"missing answers for 2 \(2, 4\)"):
        write_result_file(path, {1: "a", 3: "c"}, [1, 2, 3, 4])
    assert not path.exists() and list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_reading_result_files(tmp_path: Path) -> None:
    same = _write(
        tmp_path / "same.json", [{"question_id": 1, "answer": "a"}, {"question_id": 1, "answer": "a"}]
    )
    assert read_result_file(same) == {1: "a"}  # merged files of padded samplers repeat questions
    cases = {
        "conflict.json": ([{"question_id": 1, "answer": "a"}, {"question_id": 1, "answer": "b"}], "record 1"),
        "notlist.json": ({"question_id": 1}, "expected a JSON list"),
        "badid.json": ([{"question_id": "1", "answer": "a"}], "field 'question_id'"),
        "badanswer.json": ([{"question_id": 1, "answer": 3}], "field 'answer'"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(DataError, match=message):
            read_result_file(_write(tmp_path / name, data))


def test_annotations_must_match_their_questions(real: tuple[Path, Path], tmp_path: Path) -> None:
    questions = json.loads(real[0].read_text())
    questions["questions"] = questions["questions"][:2]
    fewer = _write(tmp_path / "q.json", questions)
    with pytest.raises(DataError, match=r"1 \(458752002\) question id\(s\) not in the ground truth"):
        read_vqa_annotations(real[1], fewer)
