"""RefCOCO+ readers on files the tests write: the restricted unpickler, REFER refs and instances, proposals."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from albef.data.errors import DataError
from albef.data.formats_grounding import (
    read_dets,
    read_grounding_eval,
    read_grounding_train,
    read_refer,
    refs_to_json,
    safe_unpickle,
)
from albef.data.records import GroundingRecord

REFS = [
    {
        "ref_id": 7, "ann_id": 70, "image_id": 580001, "split": "testA", "category_id": 1,
        "file_name": "COCO_train2014_000000580001_70.jpg",
        "sentences": [{"tokens": ["man", "left"], "raw": "Man, left!", "sent_id": 1, "sent": "man left"}],
    },
    {
        "ref_id": 8, "ann_id": 71, "image_id": 580001, "split": "val", "category_id": 3,
        "file_name": "COCO_train2014_000000580001_71.jpg", "sentences": [{"sent": "red car", "raw": "red car"}],
    },
]  # fmt: skip
INSTANCES = {
    "images": [{"id": 580001, "height": 480, "width": 640, "file_name": "COCO_train2014_000000580001.jpg"}],
    "annotations": [
        {"id": 70, "image_id": 580001, "bbox": [10.5, 20.0, 100.0, 200.25], "category_id": 1},
        {"id": 71, "image_id": 580001, "bbox": [300, 40, 50, 60], "category_id": 3},
    ],
}


class Exploit:
    """Loading a pickle of this runs ``os.system`` (what any pickle may do to an unrestricted reader)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_plain_data_loads_at_every_protocol(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "refs.p"
    path.write_bytes(pickle.dumps(REFS, protocol=protocol))
    assert safe_unpickle(path) == REFS


@pytest.mark.parametrize("payload", [Exploit(), {1, 2}, Path("x")], ids=["os.system", "set", "pathlib"])
def test_a_pickle_asking_for_any_global_is_refused(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1, "evil": payload}], protocol=2))
    with pytest.raises(DataError, match=r"refs\(unc\)\.p.*unsafe or corrupt pickle: refused to load"):
        safe_unpickle(path)


def test_a_truncated_pickle_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "refs.p"
    path.write_bytes(pickle.dumps(REFS, protocol=2)[:40])
    with pytest.raises(DataError, match=r"refs\.p"):
        safe_unpickle(path)


def test_refer_boxes_come_from_the_refs_annotation(tmp_path: Path) -> None:
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(REFS, protocol=2))
    (tmp_path / "instances.json").write_text(json.dumps(INSTANCES))
    refs, sizes = read_refer(tmp_path / "refs(unc).p", tmp_path / "instances.json")
    assert refs[7].bbox == (10.5, 20.0, 100.0, 200.25) and refs[7].split == "testA"
    assert refs[8].bbox == (300.0, 40.0, 50.0, 60.0) and refs[8].image_id == 580001
    assert sizes == {580001: (480, 640)}
    # the JSON that `albef data prepare refcoco+` writes reads the same
    (tmp_path / "refs.json").write_text(json.dumps(refs_to_json(REFS)))
    assert read_refer(tmp_path / "refs.json", tmp_path / "instances.json") == (refs, sizes)
    assert refs_to_json(REFS)[0]["sentences"] == ["man left"]


def test_a_ref_whose_annotation_is_missing_names_the_record(tmp_path: Path) -> None:
    bad = [dict(REFS[0], ann_id=999)]
    (tmp_path / "refs.json").write_text(json.dumps(bad))
    (tmp_path / "instances.json").write_text(json.dumps(INSTANCES))
    with pytest.raises(DataError, match=r"refs.json.*(record|index) 0.*ann_id.*annotation 999"):
        read_refer(tmp_path / "refs.json", tmp_path / "instances.json")


def test_train_records_share_the_index_of_their_image_file(tmp_path: Path) -> None:
    path = tmp_path / "refcoco+_train.json"
    records = [
        {"image": "train2014/a.jpg", "text": "man on the left"},
        {"image": "train2014/b.jpg", "text": "dog"},
        {"image": "train2014/a.jpg", "text": "person in red"},
    ]
    path.write_text(json.dumps(records))
    out = read_grounding_train(path)
    assert [r.idx for r in out] == [0, 1, 0] and out[2].caption == "person in red"
    (tmp_path / "val.json").write_text(json.dumps([dict(records[0], ref_id=5)]))
    assert read_grounding_eval(tmp_path / "val.json") == [
        GroundingRecord("train2014/a.jpg", "man on the left", 5)
    ]


def test_proposals_keep_four_numbers_and_bad_boxes_name_the_image(tmp_path: Path) -> None:
    path = tmp_path / "dets.json"
    path.write_text(json.dumps({"580001": [[1, 2, 3, 4, 0.9, 7], [5.5, 6, 7, 8]]}))
    assert read_dets(path) == {"580001": [[1.0, 2.0, 3.0, 4.0], [5.5, 6.0, 7.0, 8.0]]}
    path.write_text(json.dumps({"580001": [[1, 2, "x", 4]]}))
    with pytest.raises(DataError, match=r"dets.json.*580001\[0\]"):
        read_dets(path)
