"""Every malformed input gives a DataError that names the file, the record and the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from albef.data import (
    DataError,
    read_answer_list,
    read_coco_captions,
    read_maccap_flickr,
    read_nlvr,
    read_nlvr_lil,
    read_pretrain,
    read_retrieval_eval,
    read_retrieval_train,
    read_ve,
    read_vqa_test,
    read_vqa_train,
    read_vqa_v2,
)

EVAL_OK = {"image": "a.jpg", "caption": ["a dog"]}
TRAIN_OK = {"image": "a.jpg", "caption": "a dog", "image_id": 1}
NLVR_OK = {"images": ["a.png", "b.png"], "sentence": "Two dogs.", "label": "True"}
VE_OK = {"image": "123", "sentence": "A man.", "label": "neutral"}
VQA_OK = {"question_id": 1, "question": "Why?", "answer": ["a", "b"], "image": "x.jpg", "dataset": "vqa"}
LIL_OK = {"identifier": "dev-1-0-0", "sentence": "Two dogs.", "label": "True"}
ANSWERS_10 = [{"answer": "yes", "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)]
V2_QUESTIONS = {
    "data_subtype": "val2014",
    "questions": [{"image_id": 4, "question": "Q?", "question_id": 40}],
}
COCO_OK = {
    "images": [{"id": 1, "file_name": "a.jpg"}],
    "annotations": [{"id": 1, "image_id": 1, "caption": "c"}],
}


def write(path: Path, content: Any) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def error_of(read: Callable[[Path], Any], path: Path) -> str:
    with pytest.raises(DataError) as info:
        read(path)
    assert info.value.path == str(path)
    return str(info.value)


def check(message: str, path: Path, *expected: str) -> None:
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def case(name: str, reader: Callable[[Path], Any], content: Any, *expected: str) -> Any:
    """One bad file: the reader, the file content and the parts the message must contain."""
    return pytest.param(reader, content, expected, id=name)


EVAL_B = {"image": "b.jpg"}
RECORD_CASES = [
    case("not-an-object", read_retrieval_eval, [EVAL_OK, 5], "record 1: expected a JSON object, got int"),
    case("missing-field", read_retrieval_eval, [EVAL_OK, EVAL_B], "record 1: field 'caption': missing"),
    case(
        "eval-caption-str",
        read_retrieval_eval,
        [EVAL_OK, EVAL_OK, {**EVAL_B, "caption": "a dog"}],
        "record 2: field 'caption': expected a list of strings, got str",
    ),
    case(
        "eval-no-caption",
        read_retrieval_eval,
        [{**EVAL_B, "caption": []}],
        "record 0: field 'caption': empty list",
    ),
    case(
        "eval-caption-blank",
        read_retrieval_eval,
        [{**EVAL_B, "caption": ["ok", " \n"]}],
        "record 0: field 'caption[1]': empty string",
    ),
    case(
        "eval-caption-item",
        read_retrieval_eval,
        [{**EVAL_B, "caption": ["ok", 3]}],
        "record 0: field 'caption[1]': expected a string, got int",
    ),
    case(
        "eval-image-null",
        read_retrieval_eval,
        [{"image": None, "caption": ["x"]}],
        "record 0: field 'image': expected a string, got null",
    ),
    case(
        "train-caption-blank",
        read_retrieval_train,
        [TRAIN_OK, {**TRAIN_OK, "caption": "  "}],
        "record 1: field 'caption': empty string",
    ),
    case(
        "train-caption-list",
        read_retrieval_train,
        [{**TRAIN_OK, "caption": ["x"]}],
        "record 0: field 'caption': expected a string, got list",
    ),
    case(
        "train-image-id-null",
        read_retrieval_train,
        [{**TRAIN_OK, "image_id": None}],
        "record 0: field 'image_id': expected a string or number, got null",
    ),
    case(
        "train-image-id-bool",
        read_retrieval_train,
        [{**TRAIN_OK, "image_id": True}],
        "record 0: field 'image_id': expected a string or number, got bool",
    ),
    case(
        "pretrain-caption-empty",
        read_pretrain,
        [{"image": "a.jpg", "caption": ""}],
        "record 0: field 'caption': empty string",
    ),
    case(
        "pretrain-caption-type",
        read_pretrain,
        [{"image": "a.jpg", "caption": {"text": "x"}}],
        "record 0: field 'caption': expected a list of strings, got dict",
    ),
    case(
        "maccap-captions-str",
        read_maccap_flickr,
        [{"split": "test", "image_name": "1.jpg", "captions": "x"}],
        "record 0: field 'captions': expected a list of strings, got str",
    ),
    case(
        "nlvr-label-lower",
        read_nlvr,
        [NLVR_OK, {**NLVR_OK, "label": "true"}],
        "record 1: field 'label': expected one of 'True', 'False', got 'true'",
    ),
    case("nlvr-label-bool", read_nlvr, [{**NLVR_OK, "label": True}], "record 0: field 'label'", "(bool)"),
    case(
        "nlvr-three-images",
        read_nlvr,
        [{**NLVR_OK, "images": ["a", "b", "c"]}],
        "record 0: field 'images': expected 2 image paths, got 3",
    ),
    case(
        "ve-label", read_ve, [VE_OK, {**VE_OK, "label": "entails"}], "record 1: field 'label'", "'entailment'"
    ),
    case(
        "ve-image-jpg", read_ve, [{**VE_OK, "image": "1.jpg"}], "record 0: field 'image'", "without extension"
    ),
    case("ve-image-int", read_ve, [{**VE_OK, "image": 123}], "record 0: field 'image': expected a string"),
    case("vqa-dataset", read_vqa_train, [{**VQA_OK, "dataset": "gqa"}], "record 0: field 'dataset'"),
    case(
        "vqa-answer-str",
        read_vqa_train,
        [VQA_OK, {**VQA_OK, "answer": "red"}],
        "record 1: field 'answer': expected a list of strings, got str",
    ),
    case(
        "vqa-answer-empty", read_vqa_train, [{**VQA_OK, "answer": []}], "record 0: field 'answer': empty list"
    ),
    case(
        "vg-answer-list",
        read_vqa_train,
        [{**VQA_OK, "dataset": "vg", "answer": ["a"]}],
        "record 0: field 'answer': expected a string, got list",
    ),
    case("vqa-question-blank", read_vqa_train, [{**VQA_OK, "question": ""}], "record 0: field 'question'"),
    case(
        "vqa-test-no-id",
        read_vqa_test,
        [{"question": "Q?", "image": "x.jpg"}],
        "record 0: field 'question_id': missing",
    ),
    case(
        "answer-list-type", read_answer_list, ["yes", "no", 2], "record 2: expected an answer string, got int"
    ),
    case(
        "answer-list-duplicate",
        read_answer_list,
        ["yes", "no", "yes"],
        "record 2: duplicate answer 'yes' (first at record 0)",
    ),
]


@pytest.mark.parametrize(("reader", "content", "expected"), RECORD_CASES)
def test_record_errors(
    tmp_path: Path, reader: Callable[[Path], Any], content: Any, expected: tuple[str, ...]
) -> None:
    path = write(tmp_path / "bad.json", content)
    check(error_of(reader, path), path, *expected)


@pytest.mark.parametrize(
    "reader",
    [
        read_pretrain,
        read_retrieval_train,
        read_retrieval_eval,
        read_nlvr,
        read_ve,
        read_vqa_train,
        read_vqa_test,
        read_answer_list,
        read_maccap_flickr,
    ],
)
def test_top_level_must_be_a_list(tmp_path: Path, reader: Callable[[Path], Any]) -> None:
    path = write(tmp_path / "dict.json", {"image": "a.jpg", "caption": ["x"]})
    check(error_of(reader, path), path, "expected a JSON list", "at the top level, got dict")


@pytest.mark.parametrize("reader", [read_retrieval_eval, read_coco_captions, read_vqa_v2, read_answer_list])
def test_missing_file(tmp_path: Path, reader: Callable[[Path], Any]) -> None:
    path = tmp_path / "nowhere" / "missing.json"
    check(error_of(reader, path), path, "cannot read file")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    check(error_of(read_nlvr_lil, tmp_path), tmp_path, "cannot read file")


def test_unparsable_json(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.json", '[\n  {"image": "a.jpg",\n  "caption": ["x"]\n')
    check(error_of(read_retrieval_eval, path), path, "line 4:", "invalid JSON")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"image": "a.jpg", "caption": ["café"]}]'.encode("latin-1"))
    check(error_of(read_retrieval_eval, path), path, "not valid UTF-8")


# ---------------------------------------------------------------- JSON lines (lil-lab NLVR²)


def test_jsonl_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path / "dev.jsonl", json.dumps(LIL_OK) + "\n\n" + json.dumps(LIL_OK) + "\n{oops\n")
    check(error_of(read_nlvr_lil, path), path, "record 2 (line 4):", "invalid JSON line")


def test_jsonl_record_errors(tmp_path: Path) -> None:
    lines = [LIL_OK, {**LIL_OK, "label": "yes"}]
    path = write(tmp_path / "dev.jsonl", "\n".join(json.dumps(x) for x in lines))
    check(error_of(read_nlvr_lil, path), path, "record 1 (line 2): field 'label'")
    path = write(tmp_path / "dev.jsonl", json.dumps(LIL_OK) + "\n[1, 2]\n")
    check(error_of(read_nlvr_lil, path), path, "record 1 (line 2):", "expected a JSON object, got list")
    path = write(tmp_path / "dev.jsonl", json.dumps({**LIL_OK, "identifier": "dev-1-0"}))
    check(error_of(read_nlvr_lil, path), path, "record 0 (line 1): field 'identifier'", "'dev-1-0'")


# ---------------------------------------------------------------- VQA v2 and COCO (mappings)


def v2_error(tmp_path: Path, questions: Any, annotations: Any) -> DataError:
    """The DataError of reading ``questions.json`` with ``annotations.json`` (VQA v2 layout)."""
    with pytest.raises(DataError) as info:
        read_vqa_v2(
            write(tmp_path / "questions.json", questions), write(tmp_path / "annotations.json", annotations)
        )
    return info.value


def test_v2_questions_top_level(tmp_path: Path) -> None:
    path = write(tmp_path / "q.json", [1, 2])
    check(error_of(read_vqa_v2, path), path, "expected a JSON object at the top level, got list")


def test_v2_missing_subtype(tmp_path: Path) -> None:
    path = write(tmp_path / "q.json", {"questions": []})
    check(error_of(read_vqa_v2, path), path, "field 'data_subtype': missing")


def test_v2_question_errors(tmp_path: Path) -> None:
    q = {
        "data_subtype": "val2014",
        "questions": [V2_QUESTIONS["questions"][0], {"image_id": 4, "question_id": 41}],
    }
    path = write(tmp_path / "q.json", q)
    check(error_of(read_vqa_v2, path), path, "questions record 1: field 'question'")


def test_v2_annotation_errors(tmp_path: Path) -> None:
    bad_answers = [*ANSWERS_10[:3], {"answer_id": 4}, *ANSWERS_10[4:]]
    record = "annotations record 0"
    cases = [
        ([{"question_id": 40, "answers": bad_answers}], f"{record}: field 'answers[3].answer': missing"),
        (
            [{"question_id": 40, "answers": [*ANSWERS_10[:9], 7]}],
            f"{record}: field 'answers[9]': expected a JSON",
        ),
        ([{"question_id": 40, "answers": []}], f"{record}: field 'answers': empty list"),
        (
            [{"question_id": 40, "answers": ANSWERS_10, "question_type": 3}],
            f"{record}: field 'question_type'",
        ),
        (
            [{"question_id": 40, "answers": ANSWERS_10, "image_id": 5}],
            f"{record}: field 'image_id': 5 differs",
        ),
        (
            [{"question_id": 40, "answers": ANSWERS_10}, {"question_id": 99, "answers": ANSWERS_10}],
            "annotations record 1: field 'question_id': no such question",
        ),
        ("none", "field 'annotations': expected a list of objects, got str"),
    ]
    for content, expected in cases:
        err = v2_error(tmp_path, V2_QUESTIONS, {"annotations": content})
        check(str(err), tmp_path / "annotations.json", expected)


def test_v2_question_without_annotation(tmp_path: Path) -> None:
    err = v2_error(tmp_path, V2_QUESTIONS, {"annotations": []})
    check(
        str(err),
        tmp_path / "questions.json",
        "questions record 0: field 'question_id': no annotation for question 40",
    )


def test_coco_errors(tmp_path: Path) -> None:
    image, ann = COCO_OK["images"][0], COCO_OK["annotations"][0]
    image_2, ann_2 = {"id": 2, "file_name": "b.jpg"}, {**ann, "id": 2}
    cases = [
        ([COCO_OK], "expected a JSON object at the top level, got list"),
        ({"annotations": []}, "field 'images': missing"),
        (
            {**COCO_OK, "annotations": [ann, {**ann_2, "image_id": 7}]},
            "annotations record 1: field 'image_id': no image with id 7",
        ),
        (
            {**COCO_OK, "annotations": [ann, ann]},
            "annotations record 1: field 'id': duplicate annotation id 1",
        ),
        (
            {**COCO_OK, "annotations": [ann, {**ann_2, "caption": " "}]},
            "annotations record 1: field 'caption': empty string",
        ),
        (
            {**COCO_OK, "images": [image, {**image_2, "id": "2"}]},
            "images record 1: field 'id': expected an integer, got str",
        ),
        ({**COCO_OK, "images": [image, image_2]}, "images record 1: field 'id': image 2 has no caption"),
    ]
    for content, expected in cases:
        path = write(tmp_path / "captions.json", content)
        check(error_of(read_coco_captions, path), path, expected)
