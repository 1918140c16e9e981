"""NLVR² metrics: accuracy, consistency (hand-made groups and the real dev identifiers), the predictions file
and scoring as lil-lab's ``nlvr2/eval/metrics.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from albef.data.formats import read_nlvr_lil
from albef.data.records import NLVRRecord
from albef.evaluation.nlvr_eval import (
    MissingPredictionsError,
    accuracy,
    consistency,
    example_identifiers,
    format_predictions,
    parse_predictions,
    per_class_accuracy,
    read_labels,
    read_predictions,
    score_nlvr,
    score_predictions,
    write_predictions,
)

REAL_DEV = "nlvr2_dev__lil-lab_nlvr.jsonl"


# -- hand-made -----------------------------------------------------------------------------------------------
def test_accuracy_and_per_class() -> None:
    pred, labels = torch.tensor([0, 1, 2, 2, 1]), torch.tensor([0, 1, 1, 2, 0])
    assert accuracy(pred, labels) == pytest.approx(3 / 5)
    assert per_class_accuracy(pred, labels, 4) == [0.5, 0.5, 1.0, None]
    assert accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)) == 0.0
    with pytest.raises(ValueError, match="labels"):
        accuracy(pred, labels[:3])


def test_consistency_on_hand_made_groups() -> None:
    groups = {"a": [0, 1, 2], "b": [3], "c": [4, 5]}
    assert consistency([True] * 6, groups) == 1.0
    assert consistency([True, False, True, True, True, True], groups) == pytest.approx(2 / 3)
    assert consistency([True, True, True, False, False, True], groups) == pytest.approx(1 / 3)
    assert consistency([False] * 6, groups) == 0.0
    assert consistency([], {}) == 0.0


def test_score_nlvr_groups_by_identifier_without_the_pair_id() -> None:
    ids = ["dev-1-0-0", "dev-1-1-0", "dev-1-0-1", "dev-2-3-0", "test1-2-0-0"]
    # Sentences: dev-1-*-0 (two pairs), dev-1-*-1, dev-2-*-0, test1-2-*-0 (other split, same set id).
    score = score_nlvr([True, False, True, True, True], ids)
    assert (score.examples, score.groups) == (5, 4)
    assert score.accuracy == pytest.approx(4 / 5)
    assert score.consistency == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="outcomes"):
        score_nlvr([True], ids)


# -- identifiers of ALBEF records ----------------------------------------------------------------------------
def _record(image0: str, sentence: str, identifier: str | None = None) -> NLVRRecord:
    return NLVRRecord((image0, image0.replace("img0", "img1")), sentence, True, identifier)


def test_identifiers_from_the_file_are_kept() -> None:
    records = [_record("a.png", "s", "dev-5-1-1")]
    assert example_identifiers(records) == (["dev-5-1-1"], "file")


def test_identifiers_derived_from_lil_image_names() -> None:
    records = [
        _record("dev/dev-7-0-img0.png", "One dog."),
        _record("dev/dev-7-1-img0.png", "One dog."),
        _record("dev/dev-7-0-img0.png", "Two cats."),
        _record("images/dev-8-2-img0.png", "One dog."),  # another set: numbered from 0 again
    ]
    ids, source = example_identifiers(records)
    assert source == "images"
    assert ids == ["dev-7-0-0", "dev-7-1-0", "dev-7-0-1", "dev-8-2-0"]


def test_identifiers_without_lil_names_group_by_sentence() -> None:
    records = [_record("x.png", "A"), _record("y.png", "B"), _record("z.png", "A")]
    ids, source = example_identifiers(records)
    assert source == "sentences"
    assert score_nlvr([True, True, False], ids).groups == 2  # "A" twice, "B" once


# -- the real NLVR2 dev file ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_dev(real_data_dir: Path) -> list[NLVRRecord]:
    return read_nlvr_lil(real_data_dir / REAL_DEV)


def test_real_dev_consistency_groups(real_dev: list[NLVRRecord]) -> None:
    ids = [str(r.identifier) for r in real_dev]
    perfect = score_nlvr([True] * len(ids), ids)
    assert (perfect.examples, perfect.groups) == (6982, 2018)
    assert (perfect.accuracy, perfect.consistency) == (1.0, 1.0)
    one_wrong = score_nlvr([i != 0 for i in range(len(ids))], ids)
    assert one_wrong.consistency == pytest.approx(2017 / 2018)


def test_real_dev_always_true_matches_an_independent_count(real_dev: list[NLVRRecord]) -> None:
    ids = [str(r.identifier) for r in real_dev]
    score = score_nlvr([r.label for r in real_dev], ids)  # predicting "True" everywhere
    assert score.accuracy == pytest.approx(3551 / 6982)
    sentences: dict[tuple[str, str, str], bool] = {}
    for record in real_dev:
        split, set_id, _, sentence_id = str(record.identifier).split("-")
        key = (split, set_id, sentence_id)
        sentences[key] = sentences.get(key, True) and record.label
    assert score.consistency == pytest.approx(sum(sentences.values()) / len(sentences))


def test_real_dev_scored_from_a_predictions_file(real_data_dir: Path, tmp_path: Path) -> None:
    labels = read_labels(real_data_dir / REAL_DEV)
    ids = [i for i, _ in labels]
    path = write_predictions(tmp_path / "p.csv", ids, [label == "True" for _, label in labels])
    score = score_predictions(read_predictions(path), labels)
    assert (score.accuracy, score.consistency, score.groups) == (1.0, 1.0, 2018)


# -- predictions file and official scoring -------------------------------------------------------------------
def test_predictions_file_round_trip(tmp_path: Path) -> None:
    ids, preds = ["dev-1-0-0", "dev-1-1-0", "dev-2-0-1"], [True, False, True]
    path = write_predictions(tmp_path / "sub" / "p.csv", ids, preds)
    assert path.read_text() == "dev-1-0-0,True\ndev-1-1-0,False\ndev-2-0-1,True\n"
    back = read_predictions(path)
    assert list(back) == ids
    assert [v == "True" for v in back.values()] == preds


def test_format_refuses_mismatch_and_commas() -> None:
    with pytest.raises(ValueError, match="identifiers"):
        format_predictions(["a"], [True, False])
    with pytest.raises(ValueError, match="CSV"):
        format_predictions(["a,b"], [True])


def test_parse_follows_the_official_reader() -> None:
    text = " dev-1-0-0,true \n\ndev-1-1-0,False,extra\n"
    assert parse_predictions(text) == {"dev-1-0-0": "true", "dev-1-1-0": "False"}
    with pytest.raises(ValueError, match="line 2"):
        parse_predictions("dev-1-0-0,True\nno-comma\n")


def test_parse_refuses_what_the_official_reader_would_score_silently() -> None:
    # The official reader keeps the last of two lines of an identifier, and counts "maybe" as wrong.
    with pytest.raises(
        ValueError, match=r"^line 3: identifier 'dev-1-0-0' is predicted again \(first on line 1\)$"
    ):
        parse_predictions("dev-1-0-0,True\ndev-1-1-0,False\ndev-1-0-0,FALSE\n")
    with pytest.raises(ValueError, match=r"^line 2: prediction 'maybe' of 'dev-1-1-0' is not True or False$"):
        parse_predictions("dev-1-0-0,True\ndev-1-1-0,maybe\n")


def test_score_is_case_insensitive_and_ignores_extra_predictions() -> None:
    labels = [("dev-1-0-0", "True"), ("dev-1-1-0", "False"), ("dev-2-0-0", "True")]
    predictions = {"dev-1-0-0": "TRUE", "dev-1-1-0": "false", "dev-2-0-0": "1", "dev-9-0-0": "True"}
    score = score_predictions(predictions, labels)
    assert score.accuracy == pytest.approx(2 / 3)  # "1" is not "true"
    assert score.consistency == pytest.approx(1 / 2)


def test_missing_predictions_are_listed() -> None:
    labels = [(f"dev-{i}-0-0", "True") for i in range(30)]
    with pytest.raises(MissingPredictionsError) as info:
        score_predictions({"dev-0-0-0": "True", "extra-1-1-1": "True"}, labels)
    assert info.value.missing == [f"dev-{i}-0-0" for i in range(1, 30)]
    assert "29 of 30" in str(info.value) and "dev-1-0-0" in str(info.value) and "9 more" in str(info.value)
