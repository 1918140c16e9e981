"""``albef.data.prepare``: converters, answer list, manifest checks, on the real files and on hand-written ones.

Every converted file is read back through its reader in ``albef.data.formats``, never with ``json.load``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from albef.data import (
    DataError,
    VQARecord,
    nlvr_consistency_groups,
    read_answer_list,
    read_maccap_flickr,
    read_nlvr,
    read_nlvr_lil,
    read_pretrain,
    read_retrieval_eval,
    read_retrieval_train,
    read_ve,
    read_vqa_test,
    read_vqa_train,
)
from albef.data.prepare import (
    DATASETS,
    PrepareReport,
    build_answer_list,
    load_manifest,
    majority_answer,
    manifest_path,
    parse_manifest,
    prepare,
)

REPO = Path(__file__).resolve().parents[2]
REAL = {
    "nlvr2/data/dev.json": "nlvr2_dev__lil-lab_nlvr.jsonl",
    "nlvr2/data/test1.json": "nlvr2_test1__lil-lab_nlvr.jsonl",
    "flickr30k/annotations/maccap/flickr30k_test.json": "flickr30k_karpathy_test_1k__MacCap.json",
    "albef_release/coco_test.json": "coco_karpathy_test_5k__albef_format__CVLR-RD.json",
    "vqa/v2_OpenEnded_mscoco_train2014_questions.json": "vqav2_train2014_3q_questions__allennlp_fixture.json",
    "vqa/v2_mscoco_train2014_annotations.json": "vqav2_train2014_3q_annotations__allennlp_fixture.json",
}
"""Where each real file of ../shared/data/real goes in a data root (the layout of datasets/<name>/README.md)."""


def write(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def run(name: str, root: Path, **kwargs: Any) -> PrepareReport:
    return prepare(load_manifest(name), root, root / "data", **kwargs)


def errors(report: PrepareReport) -> list[str]:
    return [f.message for f in report.findings if f.level == "error"]


def warnings(report: PrepareReport) -> list[str]:
    return [f.message for f in report.findings if f.level == "warning"]


def touch(root: Path, *images: str) -> None:
    for image in images:
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        (root / image).write_bytes(b"\xff\xd8")


# ----------------------------------------------------------------------------------------------- real files
@pytest.fixture(scope="module")
def real_root(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real") / "root"
    for place, name in REAL.items():
        (root / place).parent.mkdir(parents=True, exist_ok=True)
        (root / place).symlink_to(real_data_dir / name)
    return root


@pytest.fixture(scope="module")
def real_reports(real_root: Path) -> dict[str, PrepareReport]:
    return {name: run(name, real_root, images=False) for name in ("coco", "flickr30k", "nlvr2", "vqa")}


def test_real_nlvr2_converts_with_published_counts(real_root: Path, real_reports: dict[str, Any]) -> None:
    for out, raw, n, n_true, groups in (
        ("nlvr_dev.json", "nlvr2/data/dev.json", 6982, 3551, 2018),
        ("nlvr_test.json", "nlvr2/data/test1.json", 6967, 3558, 1995),
    ):
        records = read_nlvr(real_root / "data" / out)
        assert len(records) == n and sum(r.label for r in records) == n_true
        assert len(nlvr_consistency_groups(r.identifier or "" for r in records)) == groups
        lil = read_nlvr_lil(real_root / raw)
        assert [(r.sentence, r.label, r.identifier) for r in records] == [
            (r.sentence, r.label, r.identifier) for r in lil
        ]
    first = read_nlvr(real_root / "data" / "nlvr_dev.json")[0]
    assert first.images == ("dev/dev-850-0-img0.png", "dev/dev-850-0-img1.png")
    assert first.label is False and first.identifier == "dev-850-0-0"
    report = real_reports["nlvr2"]
    # The dev/test1 checksums in the manifest match; only the (absent) train split fails.
    assert errors(report) == [m for m in errors(report) if m.startswith("nlvr_train.json: not in the output")]
    assert len(errors(report)) == 1


def test_real_flickr_maccap_converts_to_the_albef_eval_layout(
    real_root: Path, real_data_dir: Path, real_reports: dict[str, Any]
) -> None:
    split = read_retrieval_eval(real_root / "data" / "flickr30k_test.json")
    assert (split.num_images, split.num_texts) == (1000, 5000)
    assert split.images[0] == "flickr30k-images/1007129816.jpg"
    assert split.images[-1] == "flickr30k-images/97234558.jpg"
    assert split == read_maccap_flickr(
        real_data_dir / REAL["flickr30k/annotations/maccap/flickr30k_test.json"]
    )
    result = next(r for r in real_reports["flickr30k"].outputs if r.file == "flickr30k_test.json")
    assert result.counts == {"images": 1000, "texts": 5000}
    assert result.source == "maccap(flickr30k/annotations/maccap/flickr30k_test.json)"


def test_real_coco_release_is_copied_byte_for_byte(real_root: Path, real_reports: dict[str, Any]) -> None:
    written = real_root / "data" / "coco_test.json"
    assert written.read_bytes() == (real_root / "albef_release" / "coco_test.json").read_bytes()
    split = read_retrieval_eval(written)
    assert (split.num_images, split.num_texts) == (5000, 25009)
    assert sum(len(ids) == 6 for ids in split.img2txt) == 9
    report = real_reports["coco"]
    assert not any(m.startswith("coco_test.json") for m in errors(report))
    assert any(m.startswith("coco_train.json: not in the output folder") for m in errors(report))


def test_real_vqa_fixture_converts_and_its_answers_lead_the_official_list(
    real_root: Path, real_data_dir: Path, real_reports: dict[str, Any]
) -> None:
    records = read_vqa_train(real_root / "data" / "vqa_train.json")
    assert [r.question_id for r in records] == [458752000, 458752001, 458752002]
    assert all(len(r.raw_answers) == 10 and r.dataset == "vqa" for r in records)
    assert records[0].image == "train2014/COCO_train2014_000000458752.jpg"
    assert dict(zip(records[0].answers, records[0].weights, strict=True))["net"] == pytest.approx(0.6)
    built = read_answer_list(real_root / "data" / "answer_list.json")
    official = read_answer_list(real_data_dir / "vqa_answer_list_3128__albef_format__CVLR-RD.json")
    assert built == official[:3] == ["net", "pitcher", "orange"]
    messages = errors(real_reports["vqa"])
    assert any("vqa_train.json: records: 3, expected 443757" in m for m in messages)
    assert any("answer_list.json: records: 3, expected 3128" in m for m in messages)


def test_real_answer_list_release_is_validated_and_counted(real_data_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "albef_release").mkdir(parents=True)
    (root / "albef_release" / "answer_list.json").symlink_to(
        real_data_dir / "vqa_answer_list_3128__albef_format__CVLR-RD.json"
    )
    report = run("vqa", root, images=False)
    result = next(r for r in report.outputs if r.file == "answer_list.json")
    assert result.counts == {"records": 3128} and result.source is not None
    assert not any(m.startswith("answer_list.json") for m in errors(report))


# ----------------------------------------------------------------------------------------------- answer list
def vqa(question_id: int, *answers: str) -> VQARecord:
    return VQARecord(question_id, "q?", "x.jpg", "vqa", (), (), raw_answers=answers)


def test_majority_answer_breaks_ties_by_first_given() -> None:
    assert majority_answer(vqa(1, "a", "b", "b", "a", "c")) == "a"
    assert majority_answer(vqa(2, "c", "b", "b")) == "b"


def test_answer_list_ranks_by_votes_then_first_appearance() -> None:
    records = [
        vqa(1, "red", "red", "blue"),  # red
        vqa(2, "two", "2", "2"),  # 2
        vqa(3, "yes"),  # yes
        vqa(4, "2"),  # 2
        vqa(5, "no"),  # no
        vqa(6, "yes", "no", "no"),  # no
        vqa(7, "cat"),  # cat
    ]
    # Votes: red 1, 2 2, yes 1, no 2, cat 1 -> top 3 = {2, no} + the first-seen of the 1-vote answers (red).
    assert build_answer_list(records, size=3) == ["red", "2", "no"]
    assert build_answer_list(records, size=4) == ["red", "2", "yes", "no"]
    assert build_answer_list(records, size=2) == ["2", "no"]
    assert build_answer_list(records) == ["red", "2", "yes", "no", "cat"]  # fewer than 3,128


# ----------------------------------------------------------------------------------------------- converters
def karpathy_image(split: str, name: str, captions: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "filename": name,
        "split": split,
        "sentences": [{"raw": c, "tokens": []} for c in captions],
        **extra,
    }


def test_karpathy_coco_makes_train_val_test(tmp_path: Path) -> None:
    images = [
        karpathy_image(
            "train", "COCO_train2014_000000000009.jpg", ["a", "b"], filepath="train2014", cocoid=9
        ),
        karpathy_image("restval", "COCO_val2014_000000000042.jpg", ["c"], filepath="val2014", cocoid=42),
        karpathy_image("val", "COCO_val2014_000000000001.jpg", ["d", "e"], filepath="val2014", cocoid=1),
        karpathy_image("test", "COCO_val2014_000000000002.jpg", ["f"] * 6, filepath="val2014", cocoid=2),
    ]
    write(tmp_path / "coco/annotations/dataset_coco.json", {"images": images, "dataset": "coco"})
    report = run("coco", tmp_path, images=False)
    train = read_retrieval_train(tmp_path / "data/coco_train.json")
    assert [(r.image, r.caption, r.image_id, r.idx) for r in train] == [
        ("train2014/COCO_train2014_000000000009.jpg", "a", "coco_9", 0),
        ("train2014/COCO_train2014_000000000009.jpg", "b", "coco_9", 0),
        ("val2014/COCO_val2014_000000000042.jpg", "c", "coco_42", 1),
    ]
    val = read_retrieval_eval(tmp_path / "data/coco_val.json")
    assert val.images == ["val2014/COCO_val2014_000000000001.jpg"] and val.texts == ["d", "e"]
    assert read_retrieval_eval(tmp_path / "data/coco_test.json").num_texts == 6
    # A verified count that differs is an error, an unverified one a warning.
    assert any(m.startswith("coco_train.json: images: 2, expected 113287") for m in errors(report))
    assert any(m.startswith("coco_train.json: records: 3, expected 566747") for m in warnings(report))


def test_karpathy_flickr_uses_the_image_folder_and_the_file_stem(tmp_path: Path) -> None:
    images = [karpathy_image(s, f"{i}.jpg", [f"c{i}"]) for i, s in enumerate(("train", "val", "test"))]
    write(tmp_path / "flickr30k/annotations/dataset_flickr30k.json", {"images": images})
    run("flickr30k", tmp_path, images=False)
    train = read_retrieval_train(tmp_path / "data/flickr30k_train.json")
    assert [(r.image, r.image_id) for r in train] == [("flickr30k-images/0.jpg", "0")]
    assert read_retrieval_eval(tmp_path / "data/flickr30k_test.json").images == ["flickr30k-images/2.jpg"]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({"split": "dev"}, "images record 1: field 'split': expected one of"),
        ({"sentences": []}, "images record 1: field 'sentences': empty list"),
        ({"sentences": [{"raw": " "}]}, "images record 1: field 'sentences[0].raw': empty string"),
    ],
)
def test_karpathy_errors_name_file_and_record(tmp_path: Path, image: dict[str, Any], expected: str) -> None:
    images = [karpathy_image("test", "0.jpg", ["x"]), {**karpathy_image("test", "1.jpg", ["y"]), **image}]
    path = write(tmp_path / "flickr30k/annotations/dataset_flickr30k.json", {"images": images})
    with pytest.raises(DataError) as err:
        run("flickr30k", tmp_path, images=False)
    assert str(err.value).startswith(f"{path}: {expected}")


def test_coco_captions_go_through_pycocotools(tmp_path: Path) -> None:
    coco = {
        "images": [
            {"id": 7, "file_name": "COCO_val2014_7.jpg"},
            {"id": 3, "file_name": "COCO_val2014_3.jpg"},
        ],
        "annotations": [
            {"id": 2, "image_id": 7, "caption": "second"},
            {"id": 1, "image_id": 7, "caption": "first"},
            {"id": 5, "image_id": 3, "caption": "only"},
        ],
    }
    write(tmp_path / "coco/annotations/captions_val2014.json", coco)
    report = run("coco", tmp_path, images=False)
    split = read_retrieval_eval(tmp_path / "data/coco_captions_val2014.json")
    assert split.images == ["val2014/COCO_val2014_3.jpg", "val2014/COCO_val2014_7.jpg"]  # by image id
    assert split.texts == ["only", "first", "second"]  # by annotation id
    assert any(m.startswith("coco_captions_val2014.json: images: 2, expected 40504") for m in errors(report))


def v2_files(root: Path, subtype: str, questions: list[tuple[int, int, list[str] | None]]) -> None:
    qs = [{"image_id": image, "question": f"q{qid}?", "question_id": qid} for qid, image, _ in questions]
    write(
        root / f"vqa/v2_OpenEnded_mscoco_{subtype}_questions.json", {"data_subtype": subtype, "questions": qs}
    )
    annotations = [
        {"question_id": qid, "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(ans)]}
        for qid, _, ans in questions
        if ans is not None
    ]
    if annotations:
        write(root / f"vqa/v2_mscoco_{subtype}_annotations.json", {"annotations": annotations})


def test_vqa_v2_makes_train_val_test_and_answer_list(tmp_path: Path) -> None:
    v2_files(tmp_path, "train2014", [(10, 1, ["yes"] * 7 + ["no"] * 3), (11, 1, ["2", "two", "2"])])
    v2_files(tmp_path, "val2014", [(20, 2, ["no", "no", "yes"]), (21, 2, ["red"])])
    v2_files(tmp_path, "test2015", [(30, 3, None)])
    report = run("vqa", tmp_path, images=False)
    train = read_vqa_train(tmp_path / "data/vqa_train.json")
    assert train[0].raw_answers == ("yes",) * 7 + ("no",) * 3 and train[0].weights == (0.7, 0.3)
    assert [r.image for r in read_vqa_train(tmp_path / "data/vqa_val.json")] == [
        "val2014/COCO_val2014_000000000002.jpg"
    ] * 2
    test = read_vqa_test(tmp_path / "data/vqa_test.json")
    assert [(r.question_id, r.image, r.answers) for r in test] == [
        (30, "test2015/COCO_test2015_000000000003.jpg", ())
    ]
    assert read_answer_list(tmp_path / "data/answer_list.json") == ["yes", "2", "no", "red"]
    assert {r.file: r.source for r in report.outputs}["vqa_val.json"].startswith("vqa_v2_trainval(")


def test_vqa_v2_question_without_annotation_is_an_error(tmp_path: Path) -> None:
    v2_files(tmp_path, "train2014", [(10, 1, ["yes"])])
    questions = tmp_path / "vqa/v2_OpenEnded_mscoco_train2014_questions.json"
    data = json.loads(questions.read_text())
    data["questions"].append({"image_id": 1, "question": "q?", "question_id": 99})
    write(questions, data)
    with pytest.raises(
        DataError, match=r"questions record 1: field 'question_id': no annotation for question 99"
    ):
        run("vqa", tmp_path, images=False)


def test_vg_qa_normalises_answers(tmp_path: Path) -> None:
    qas = [{"qa_id": 1, "image_id": 5, "question": "What color is it?", "answer": " Green. "}]
    write(tmp_path / "visual-genome/question_answers.json", [{"id": 5, "qas": qas}])
    touch(tmp_path / "visual-genome", "image/5.jpg")
    report = run("vg", tmp_path)
    (record,) = read_vqa_train(tmp_path / "data/vg_qa.json")
    assert (record.question, record.answers, record.weights) == ("What color is it?", ("green",), (0.5,))
    assert (record.image, record.dataset, record.question_id) == ("image/5.jpg", "vg", None)
    assert report.ok and len(warnings(report)) == 2  # unverified image and QA counts


def test_vg_qa_empty_answer_is_an_error(tmp_path: Path) -> None:
    qas = [{"question": "Why?", "answer": "yes"}, {"question": "Why?", "answer": "."}]
    path = write(
        tmp_path / "visual-genome/question_answers.json", [{"id": 1, "qas": []}, {"id": 2, "qas": qas}]
    )
    with pytest.raises(DataError) as err:
        run("vg", tmp_path, images=False)
    assert str(err.value).startswith(f"{path}: record 1: field 'qas[1].answer': empty after normalisation")


def lil(identifier: str, label: str = "True") -> str:
    return json.dumps({"identifier": identifier, "sentence": "Two dogs.", "label": label}) + "\n"


def test_nlvr_train_images_are_found_in_their_numbered_folders(tmp_path: Path) -> None:
    write(tmp_path / "nlvr2/data/train.json", lil("train-1-0-0") + lil("train-2-1-0", "False"))
    touch(tmp_path / "nlvr2/train", "7/train-1-0-img0.png", "7/train-1-0-img1.png", "3/train-2-1-img0.png")
    report = run("nlvr2", tmp_path)
    records = read_nlvr(tmp_path / "data/nlvr_train.json")
    assert records[0].images == ("train/7/train-1-0-img0.png", "train/7/train-1-0-img1.png")
    assert records[1].images == ("train/3/train-2-1-img0.png", "train/train-2-1-img1.png")
    assert [r.label for r in records] == [True, False]
    (result,) = [r for r in report.outputs if r.file == "nlvr_train.json"]
    assert result.missing_images == ["train/train-2-1-img1.png"]
    assert any(
        m.startswith("nlvr_train.json: 1 image(s) missing under nlvr2: train/train-2") for m in errors(report)
    )


def test_nlvr_train_without_images_keeps_flat_paths_and_says_so(tmp_path: Path) -> None:
    write(tmp_path / "nlvr2/data/train.json", lil("train-1-0-0"))
    report = run("nlvr2", tmp_path, images=False)
    assert read_nlvr(tmp_path / "data/nlvr_train.json")[0].images[0] == "train/train-1-0-img0.png"
    assert any("paths written as train/<name>" in f.message for f in report.findings if f.level == "note")


def test_nlvr_bad_identifier_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "nlvr2/data/dev.json", lil("dev-1-0-0") + "\n" + lil("dev-x"))
    with pytest.raises(DataError) as err:
        run("nlvr2", tmp_path, images=False)
    assert str(err.value).startswith(f"{path}: record 1 (line 3): field 'identifier'")


def test_nlvr_checksum_mismatch_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "nlvr2/data/dev.json", lil("dev-1-0-0"))
    report = run("nlvr2", tmp_path, images=False)
    assert any(m.startswith("nlvr2/data/dev.json: SHA-256 differs") for m in errors(report))


def test_snli_ve_jsonl_converts(tmp_path: Path) -> None:
    rows = [
        {"Flikr30kID": "123.jpg", "sentence2": "A man.", "gold_label": "contradiction", "pairID": "x"},
        {"Flikr30kID": "456", "sentence2": "A dog.", "gold_label": "entailment"},
    ]
    write(tmp_path / "snli-ve/data/snli_ve_dev.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    run("snli-ve", tmp_path, images=False)
    records = read_ve(tmp_path / "data/ve_dev.json")
    assert [(r.image, r.sentence, r.label) for r in records] == [
        ("123.jpg", "A man.", 0),
        ("456.jpg", "A dog.", 2),
    ]


def test_snli_ve_unknown_label_is_an_error(tmp_path: Path) -> None:
    row = {"Flikr30kID": "1.jpg", "sentence2": "A man.", "gold_label": "-"}
    path = write(tmp_path / "snli-ve/data/snli_ve_test.jsonl", json.dumps(row) + "\n")
    with pytest.raises(DataError) as err:
        run("snli-ve", tmp_path, images=False)
    assert str(err.value).startswith(f"{path}: record 0 (line 1): field 'gold_label': expected one of")


def test_img2dataset_folder_becomes_a_pretraining_list(tmp_path: Path) -> None:
    touch(
        tmp_path, "sbu/images/00000/000000001.jpg", "sbu/images/00000/000000000.jpg", "sbu/images/00001/x.jpg"
    )
    write(tmp_path / "sbu/images/00000/000000000.txt", "a photo of a cat\n")
    write(tmp_path / "sbu/images/00000/000000001.txt", "  ")
    report = run("sbu", tmp_path)
    records = read_pretrain(tmp_path / "data/sbu.json")
    assert [(r.image, r.captions) for r in records] == [
        ("sbu/images/00000/000000000.jpg", ("a photo of a cat",))
    ]
    assert any("2 image(s) without a caption skipped" in f.message for f in report.findings)
    assert report.ok


def test_malformed_release_file_fails_on_read_back(tmp_path: Path) -> None:
    path = write(tmp_path / "albef_release/coco_test.json", [{"image": "a.jpg", "caption": "one string"}])
    with pytest.raises(DataError) as err:
        run("coco", tmp_path, images=False)
    assert str(err.value).startswith(f"{tmp_path / 'data' / 'coco_test.json'}: record 0: field 'caption'")
    assert path.exists()


# ----------------------------------------------------------------------------------------------- manifest checks
def test_image_checks_list_missing_images_and_wrong_folder_counts(tmp_path: Path) -> None:
    maccap = [{"split": "test", "image_name": f"{i}.jpg", "captions": ["c"]} for i in range(13)]
    write(tmp_path / "flickr30k/annotations/maccap/flickr30k_test.json", maccap)
    touch(tmp_path / "flickr30k/flickr30k-images", "0.jpg", "1.jpg", "extra.jpg")
    report = run("flickr30k", tmp_path)
    (result,) = [r for r in report.outputs if r.file == "flickr30k_test.json"]
    assert result.missing_images == [f"flickr30k-images/{i}.jpg" for i in range(2, 13)]
    messages = errors(report)
    assert "flickr30k/flickr30k-images: '*.jpg' files: 3, expected 31783" in messages[0]
    missing = next(m for m in messages if "missing under flickr30k" in m)
    assert missing.startswith(
        "flickr30k_test.json: 11 image(s) missing under flickr30k: flickr30k-images/2.jpg"
    )
    assert missing.endswith("flickr30k-images/11.jpg, ...")  # the first ten, then an ellipsis
    assert any(m.startswith("flickr30k_test.json: images: 13, expected 1000") for m in messages)


def test_missing_image_folder_is_an_error(tmp_path: Path) -> None:
    report = run("snli-ve", tmp_path)
    assert "missing image folder snli-ve/images" in errors(report)


def test_check_only_converts_nothing_then_reads_what_is_there(tmp_path: Path) -> None:
    write(
        tmp_path / "snli-ve/data/snli_ve_dev.jsonl",
        json.dumps({"Flikr30kID": "1", "sentence2": "A.", "gold_label": "neutral"}),
    )
    report = run("snli-ve", tmp_path, convert=False, images=False)
    assert not (tmp_path / "data").exists()
    assert any(
        m.startswith("ve_dev.json: not in the output folder") and "(inputs present)" in m
        for m in errors(report)
    )
    assert "(inputs missing)" in next(m for m in errors(report) if m.startswith("ve_test.json"))
    run("snli-ve", tmp_path, images=False)
    again = run("snli-ve", tmp_path, convert=False, images=False)
    (result,) = [r for r in again.outputs if r.file == "ve_dev.json"]
    assert result.present and result.source is None and result.counts == {"records": 1, "images": 1}


def test_every_packaged_manifest_parses_and_documents_its_counts() -> None:
    assert len(DATASETS) == 13
    for name in DATASETS.names():
        manifest = load_manifest(name)
        assert manifest.name == name and manifest.title == DATASETS.describe(name)
        made = {file for source in manifest.sources for file in source.outputs.values()}
        assert made == {o.file for o in manifest.outputs}, name
        for output in manifest.outputs:
            assert output.counts, f"{name}: {output.file} has no expected count"
            for count in output.counts.values():
                assert count.value > 0 and count.source.strip()
                assert count.verified or "unverified" in count.source or "from memory" in count.source
        readme = REPO / "datasets" / name / "README.md"
        assert readme.is_file(), readme
        assert f"albef/resources/datasets/{name}.json" in readme.read_text(encoding="utf-8")


def test_manifest_checksums_match_the_real_files(real_data_dir: Path) -> None:
    files = {f.path: f.sha256 for f in load_manifest("nlvr2").files}
    for place in ("nlvr2/data/dev.json", "nlvr2/data/test1.json"):
        digest = hashlib.sha256((real_data_dir / REAL[place]).read_bytes()).hexdigest()
        assert files[place] == digest


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m["outputs"][0].update(fromat="x"), "outputs record 0: field 'fromat': unknown key"),
        (lambda m: m["sources"][0].update(converter="magic"), "sources record 0: field 'converter': unknown"),
        (
            lambda m: m["outputs"][0]["counts"]["records"].update(verified="yes"),
            "field 'counts.records.verified'",
        ),
        (
            lambda m: m["sources"][0]["outputs"].update(file="nope.json"),
            "field 'outputs.file': 'nope.json' is not",
        ),
    ],
)
def test_malformed_manifest_names_the_entry(tmp_path: Path, edit: Any, expected: str) -> None:
    manifest = json.loads(manifest_path("nlvr2").read_text(encoding="utf-8"))
    edit(manifest)
    path = write(tmp_path / "nlvr2.json", manifest)
    with pytest.raises(DataError) as err:
        parse_manifest(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)
