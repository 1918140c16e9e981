"""Format readers on the real annotation files (../shared/data/real) and on small hand-made files."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from albef.data import (
    DataError,
    NLVRRecord,
    PretrainRecord,
    RetrievalEvalSet,
    VERecord,
    nlvr_consistency_groups,
    nlvr_group_key,
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
    vqa_answer_weights,
)

COCO_TEST = "coco_karpathy_test_5k__albef_format__CVLR-RD.json"
FLICKR_TEST = "flickr30k_karpathy_test_1k__MacCap.json"
NLVR_DEV = "nlvr2_dev__lil-lab_nlvr.jsonl"
NLVR_TEST1 = "nlvr2_test1__lil-lab_nlvr.jsonl"
ANSWER_LIST = "vqa_answer_list_3128__albef_format__CVLR-RD.json"
V2_QUESTIONS = "vqav2_train2014_3q_questions__allennlp_fixture.json"
V2_ANNOTATIONS = "vqav2_train2014_3q_annotations__allennlp_fixture.json"


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def assert_consistent(evalset: RetrievalEvalSet) -> None:
    """img2txt and txt2img are inverse, and text ids run consecutively over images."""
    flat = [t for ids in evalset.img2txt for t in ids]
    assert flat == list(range(evalset.num_texts))
    for image, ids in enumerate(evalset.img2txt):
        assert all(evalset.txt2img[t] == image for t in ids)


# ---------------------------------------------------------------- real files


def test_coco_karpathy_test(real_data_dir: Path) -> None:
    evalset = read_retrieval_eval(real_data_dir / COCO_TEST)
    assert (evalset.num_images, evalset.num_texts) == (5000, 25009)
    assert Counter(len(ids) for ids in evalset.img2txt) == {5: 4991, 6: 9}
    assert evalset.images[0] == "val2014/COCO_val2014_000000391895.jpg"
    assert evalset.texts[0] == "A man with a red helmet on a small moped on a dirt road. "  # raw, not cleaned
    assert_consistent(evalset)


def test_coco_karpathy_test_through_coco_format(real_data_dir: Path, tmp_path: Path) -> None:
    """The same split written as a COCO caption file reads back identically through pycocotools."""
    evalset = read_retrieval_eval(real_data_dir / COCO_TEST)
    image_ids = [int(Path(p).stem.rsplit("_", 1)[1]) for p in evalset.images]
    order = sorted(range(evalset.num_images), key=image_ids.__getitem__)
    images = [{"id": image_ids[i], "file_name": evalset.images[i]} for i in reversed(order)]
    annotations = [
        {"id": t, "image_id": image_ids[evalset.txt2img[t]], "caption": evalset.texts[t]}
        for t in range(evalset.num_texts)
    ]
    coco = read_coco_captions(
        write_json(tmp_path / "captions.json", {"images": images, "annotations": annotations})
    )
    assert coco.images == [evalset.images[i] for i in order]
    assert coco.texts == [evalset.texts[t] for i in order for t in evalset.img2txt[i]]
    assert_consistent(coco)


def test_flickr_maccap(real_data_dir: Path, tmp_path: Path) -> None:
    evalset = read_maccap_flickr(real_data_dir / FLICKR_TEST)
    assert (evalset.num_images, evalset.num_texts) == (1000, 5000)
    assert evalset.images[0] == "flickr30k-images/1007129816.jpg"
    assert evalset.images[-1] == "flickr30k-images/97234558.jpg"
    assert all(len(ids) == 5 for ids in evalset.img2txt)
    assert_consistent(evalset)
    # Conversion to the official layout round-trips through the official reader.
    albef_file = write_json(tmp_path / "flickr30k_test.json", evalset.to_albef_records())
    assert read_retrieval_eval(albef_file) == evalset
    assert read_maccap_flickr(real_data_dir / FLICKR_TEST, image_dir="").images[0] == "1007129816.jpg"


@pytest.mark.parametrize(
    ("name", "n", "n_true", "n_false", "n_groups"),
    [(NLVR_DEV, 6982, 3551, 3431, 2018), (NLVR_TEST1, 6967, 3558, 3409, 1995)],
)
def test_nlvr_lil(real_data_dir: Path, name: str, n: int, n_true: int, n_false: int, n_groups: int) -> None:
    records = read_nlvr_lil(real_data_dir / name)
    assert len(records) == n
    assert Counter(r.label for r in records) == {True: n_true, False: n_false}
    groups = nlvr_consistency_groups(r.identifier or "" for r in records)
    assert len(groups) == n_groups
    assert sum(len(g) for g in groups.values()) == n
    # A group is one sentence judged against several image pairs.
    assert all(len({records[i].sentence for i in g}) == 1 for g in groups.values())


def test_nlvr_lil_first_record(real_data_dir: Path) -> None:
    first = read_nlvr_lil(real_data_dir / NLVR_DEV)[0]
    assert first == NLVRRecord(
        images=("dev-850-0-img0.png", "dev-850-0-img1.png"),
        sentence="The right image shows a curving walkway of dark glass circles embedded in dirt and flanked "
        "by foliage.",
        label=False,
        identifier="dev-850-0-0",
    )


def test_answer_list(real_data_dir: Path) -> None:
    answers = read_answer_list(real_data_dir / ANSWER_LIST)
    assert len(answers) == len(set(answers)) == 3128
    assert answers[:5] == ["net", "pitcher", "orange", "yes", "white"]
    assert "yes" in answers and "no" in answers and "2" in answers


def test_vqa_v2_sample(real_data_dir: Path) -> None:
    records = read_vqa_v2(real_data_dir / V2_QUESTIONS, real_data_dir / V2_ANNOTATIONS)
    assert [r.question_id for r in records] == [458752000, 458752001, 458752002]
    for r in records:
        assert len(r.raw_answers) == 10
        assert sum(r.weights) == pytest.approx(1.0)
        assert r.image == "train2014/COCO_train2014_000000458752.jpg"
        assert (r.dataset, r.question_type, r.answer_type) == ("vqa", None, None)
    # Question 458752000: net x6 (answers 1,2,3,5,6,8), netting, mesh, pitcher, orange x1 each.
    first = records[0]
    assert first.question == "What is this photo taken looking through?"
    assert first.answers == ("net", "netting", "mesh", "pitcher", "orange")
    assert first.weights == pytest.approx((0.6, 0.1, 0.1, 0.1, 0.1))
    assert records[1].answers == ("pitcher", "catcher") and records[1].weights == pytest.approx((0.9, 0.1))
    assert records[2].answers == ("orange",) and records[2].weights == (1.0,)


def test_vqa_v2_questions_only(real_data_dir: Path) -> None:
    records = read_vqa_v2(real_data_dir / V2_QUESTIONS, image_template="{image_id}.jpg")
    assert [r.image for r in records] == ["458752.jpg"] * 3
    assert all(r.answers == () and r.weights == () for r in records)


# ---------------------------------------------------------------- hand-made files


def test_retrieval_train_idx_mapping(tmp_path: Path) -> None:
    ids: list[Any] = ["a", 1, "a", "1", 1, 2.5, "b"]
    data = [{"image": f"img{i}.jpg", "caption": f"caption {i}", "image_id": v} for i, v in enumerate(ids)]
    records = read_retrieval_train(write_json(tmp_path / "train.json", data))
    assert [r.idx for r in records] == [0, 1, 0, 2, 1, 3, 4]  # 1 and "1" are different ids
    assert [r.image_id for r in records] == ids
    assert records[3].caption == "caption 3" and records[3].image == "img3.jpg"


def test_pretrain_string_or_list(tmp_path: Path) -> None:
    data = [
        {"image": "/abs/a.jpg", "caption": "A red bus. "},
        {"image": "b.jpg", "caption": ["two dogs", "dogs on grass"]},
    ]
    assert read_pretrain(write_json(tmp_path / "pretrain.json", data)) == [
        PretrainRecord("/abs/a.jpg", ("A red bus. ",)),
        PretrainRecord("b.jpg", ("two dogs", "dogs on grass")),
    ]


def test_retrieval_eval_variable_lengths(tmp_path: Path) -> None:
    data = [{"image": "a.jpg", "caption": ["x", "y"]}, {"image": "b.jpg", "caption": ["z"]}]
    evalset = read_retrieval_eval(write_json(tmp_path / "val.json", data))
    assert evalset == RetrievalEvalSet(["a.jpg", "b.jpg"], ["x", "y", "z"], [[0, 1], [2]], [0, 0, 1])


def test_coco_captions_ordering(tmp_path: Path) -> None:
    data = {
        "images": [{"id": 9, "file_name": "nine.jpg"}, {"id": 2, "file_name": "two.jpg"}],
        "annotations": [
            {"id": 30, "image_id": 2, "caption": "two, third"},
            {"id": 5, "image_id": 9, "caption": "nine"},
            {"id": 10, "image_id": 2, "caption": "two, first"},
        ],
    }
    evalset = read_coco_captions(write_json(tmp_path / "coco.json", data))
    assert evalset.images == ["two.jpg", "nine.jpg"]
    assert evalset.texts == ["two, first", "two, third", "nine"]
    assert evalset.img2txt == [[0, 1], [2]] and evalset.txt2img == [0, 0, 1]


def test_coco_captions_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "c"}],
    }
    read_coco_captions(write_json(tmp_path / "coco.json", data))
    assert capsys.readouterr().out == ""


def test_vqa_train_weights(tmp_path: Path) -> None:
    vqa_answers = ["red", "red", "dark red", "red"]
    data = [
        {"question_id": 7, "question": "Color?", "answer": vqa_answers, "image": "t/x.jpg", "dataset": "vqa"},
        {"question": "What is on the table?", "answer": "laptop", "image": "image/1.jpg", "dataset": "vg"},
    ]
    vqa, vg = read_vqa_train(write_json(tmp_path / "vqa_train.json", data))
    assert (vqa.question_id, vqa.answers, vqa.weights) == (7, ("red", "dark red"), (0.75, 0.25))
    assert vqa.raw_answers == ("red", "red", "dark red", "red")
    assert (vg.question_id, vg.dataset, vg.answers, vg.weights) == (None, "vg", ("laptop",), (0.5,))


def test_vqa_answer_weights_are_count_over_total() -> None:
    answers, weights = vqa_answer_weights(["b", "a", "b"] + ["c"] * 7)
    assert answers == ("b", "a", "c") and weights == (0.2, 0.1, 0.7)
    with pytest.raises(ValueError):
        vqa_answer_weights([])


def test_vqa_test(tmp_path: Path) -> None:
    data = [
        {"question_id": 1, "question": "How many?", "image": "test2015/a.jpg", "dataset": "vqa"},
        {"question_id": 2, "question": "Why?", "image": "test2015/b.jpg"},
    ]
    records = read_vqa_test(write_json(tmp_path / "vqa_test.json", data))
    assert [(r.question_id, r.dataset, r.answers) for r in records] == [(1, "vqa", ()), (2, "vqa", ())]


def test_vqa_v2_types_and_image_ids(tmp_path: Path) -> None:
    questions = {
        "data_subtype": "val2014",
        "questions": [{"image_id": 42, "question": "Q?", "question_id": 420}],
    }
    answers = [{"answer": "yes", "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)]
    annotation = {"question_id": 420, "image_id": 42, "answers": answers, "multiple_choice_answer": "yes"}
    annotation |= {"question_type": "is the", "answer_type": "yes/no"}
    (record,) = read_vqa_v2(
        write_json(tmp_path / "q.json", questions),
        write_json(tmp_path / "a.json", {"annotations": [annotation]}),
    )
    assert record.image == "val2014/COCO_val2014_000000000042.jpg"
    assert (record.question_type, record.answer_type) == ("is the", "yes/no")
    assert (record.answers, record.weights, record.raw_answers) == (("yes",), (1.0,), ("yes",) * 10)


def test_nlvr_albef_format(tmp_path: Path) -> None:
    data = [
        {"images": ["dev/a-img0.png", "dev/a-img1.png"], "sentence": "Two dogs.", "label": "True"},
        {
            "images": ["dev/b-img0.png", "dev/b-img1.png"],
            "sentence": "No cat.",
            "label": "False",
            "identifier": "x",
        },
    ]
    assert read_nlvr(write_json(tmp_path / "nlvr_dev.json", data)) == [
        NLVRRecord(("dev/a-img0.png", "dev/a-img1.png"), "Two dogs.", True, None),
        NLVRRecord(("dev/b-img0.png", "dev/b-img1.png"), "No cat.", False, "x"),
    ]


def test_nlvr_group_key() -> None:
    assert nlvr_group_key("dev-850-0-0") == "dev-850-*-0"
    assert nlvr_group_key("dev-850-3-0") == nlvr_group_key("dev-850-0-0") != nlvr_group_key("dev-850-0-1")
    assert nlvr_group_key("test1-0-2-1") == "test1-0-*-1"
    assert nlvr_consistency_groups(["dev-1-0-0", "dev-1-0-1", "dev-1-1-0"]) == {
        "dev-1-*-0": [0, 2],
        "dev-1-*-1": [1],
    }
    with pytest.raises(ValueError, match="split-setid-pairid-sentenceid"):
        nlvr_group_key("dev-850-0")


def test_ve(tmp_path: Path) -> None:
    data = [
        {"image": "1234567890", "sentence": "A man is outdoors.", "label": "entailment"},
        {"image": "1", "sentence": "s", "label": "neutral"},
        {"image": "2", "sentence": "s", "label": "contradiction"},
    ]
    records = read_ve(write_json(tmp_path / "ve_dev.json", data))
    assert records[0] == VERecord("1234567890.jpg", "A man is outdoors.", 2)
    assert [r.label for r in records] == [2, 1, 0]


def test_data_error_rendering_and_pickling() -> None:
    err = DataError("data/coco_test.json", "expected a list of strings, got str", index=17, field="caption")
    assert str(err) == "data/coco_test.json: record 17: field 'caption': expected a list of strings, got str"
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and (copy.index, copy.field) == (17, "caption")
    located = DataError(Path("a.jsonl"), "bad", index=2, line=3, section=None)
    assert str(located) == "a.jsonl: record 2 (line 3): bad"
    assert str(DataError("c.json", "m", index=1, section="annotations", field="id")) == (
        "c.json: annotations record 1: field 'id': m"
    )
