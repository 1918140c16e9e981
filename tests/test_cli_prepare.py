"""``albef data prepare`` / ``albef data list`` / ``albef ls datasets`` through ``albef.cli.main.main``."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from albef.cli.main import main
from albef.data import read_nlvr, read_vqa_train
from albef.data.shards import ShardMember

NAMES = (
    "cc12m", "cc3m", "coco", "flickr30k", "nlvr2", "sbu", "snli-ve", "vg", "vqa", "refcoco+", "winoground",
    "sugarcrepe", "aro",
)  # fmt: skip


def vg_root(tmp_path: Path) -> Path:
    """A complete tiny Visual Genome copy: every output made, every image present (only unverified counts)."""
    root = tmp_path / "root"
    qas = [{"question": "What is it?", "answer": "A dog."}, {"question": "Where?", "answer": "Park"}]
    (root / "visual-genome" / "image").mkdir(parents=True)
    (root / "visual-genome" / "question_answers.json").write_text(json.dumps([{"id": 4, "qas": qas}]))
    (root / "visual-genome" / "image" / "4.jpg").write_bytes(b"\xff\xd8")
    return root


def test_prepare_real_nlvr2_files(
    real_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "nlvr2" / "data").mkdir(parents=True)
    (root / "nlvr2" / "data" / "dev.json").symlink_to(real_data_dir / "nlvr2_dev__lil-lab_nlvr.jsonl")
    (root / "nlvr2" / "data" / "test1.json").symlink_to(real_data_dir / "nlvr2_test1__lil-lab_nlvr.jsonl")
    assert main(["data", "prepare", "nlvr2", "--root", str(root), "--no-images"]) == 1  # train is absent
    out = capsys.readouterr().out
    assert "records=6982 images=8102" in out and "records=6967 images=8082" in out
    assert "error: nlvr_train.json: not in the output folder" in out
    assert out.rstrip().endswith("1 check(s) failed")
    assert len(read_nlvr(root / "data" / "nlvr_dev.json")) == 6982  # default --out is ROOT/data


def test_prepare_passes_on_a_complete_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = vg_root(tmp_path)
    out = tmp_path / "elsewhere"
    assert main(["data", "prepare", "vg", "--root", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "warning: vg_qa.json: records: 2, expected 1445322" in text
    assert text.rstrip().endswith("all checks passed")
    assert [r.answers for r in read_vqa_train(out / "vg_qa.json")] == [("a dog",), ("park",)]
    # --check-only reads what is there and converts nothing.
    assert main(["data", "prepare", "vg", "--root", str(root), "--out", str(out), "--check-only"]) == 0
    assert "present" in capsys.readouterr().out


def test_prepare_to_shards_writes_the_training_lists_as_shards(tmp_path: Path) -> None:
    root, out = vg_root(tmp_path), tmp_path / "out"
    assert main(["data", "prepare", "vg", "--root", str(root), "--out", str(out), "--to-shards"]) == 0
    shard = out / "shards" / "vg_qa" / "000000.tar"
    assert shard.is_file()
    sharded, listed = read_vqa_train(shard), read_vqa_train(out / "vg_qa.json")
    assert [(r.question, r.answers, r.dataset) for r in sharded] == [
        (r.question, r.answers, r.dataset) for r in listed
    ]
    assert ShardMember.parse(sharded[0].image).open().read() == b"\xff\xd8"  # the image file's bytes


def test_prepare_reports_missing_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = vg_root(tmp_path)
    (root / "visual-genome" / "image" / "4.jpg").unlink()
    assert main(["data", "prepare", "vg", "--root", str(root)]) == 1
    assert "error: vg_qa.json: 1 image(s) missing under visual-genome: image/4.jpg" in capsys.readouterr().out


def test_check_only_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = vg_root(tmp_path)
    assert main(["data", "prepare", "vg", "--root", str(root), "--check-only", "--no-images"]) == 1
    assert "(inputs present)" in capsys.readouterr().out
    assert not (root / "data").exists()


def test_malformed_input_exits_3_naming_file_and_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "nlvr2" / "data").mkdir(parents=True)
    path = root / "nlvr2" / "data" / "dev.json"
    path.write_text(json.dumps({"identifier": "dev-1-0-0", "sentence": "x", "label": "maybe"}) + "\n")
    assert main(["data", "prepare", "nlvr2", "--root", str(root), "--no-images"]) == 3
    err = capsys.readouterr().err
    assert f"albef data: error: {path}: record 0 (line 1): field 'label': expected one of" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["data", "prepare", "imagenet", "--root", "."],
            "unknown dataset 'imagenet'; valid names: aro, cc12m, cc3m",
        ),
        (["data", "prepare", "coco", "--root", "/no/such/dir"], "--root /no/such/dir is not a folder"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


def test_data_list_and_ls_datasets_name_every_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert main(["ls", "datasets"]) == 0
    ls = capsys.readouterr().out
    for name in NAMES:
        assert f"\n{name} " in listed and f"\n{name} " in ls
    assert "vqa_train.json, vqa_val.json, vqa_test.json, answer_list.json" in listed


def test_prepare_help_explains_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "--check-only",
        "--no-images",
        "albef_release",
        "datasets/<name>/README.md",
        "Exit status",
    ):
        assert needle in text


def test_prepare_refcoco_plus_converts_the_refs_pickle_safely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from albef.data.formats_grounding import read_dets, read_grounding_eval, read_refer

    root, out = tmp_path / "root", tmp_path / "out"
    release, refer = root / "albef_release", root / "refer" / "refcoco+"
    (release / "refcoco+").mkdir(parents=True)
    refer.mkdir(parents=True)
    image = "train2014/COCO_train2014_000000580001.jpg"
    (release / "refcoco+_train.json").write_text(json.dumps([{"image": image, "text": "man left"}]))
    for split in ("val", "test"):
        (release / f"refcoco+_{split}.json").write_text(
            json.dumps([{"image": image, "text": "man", "ref_id": 7}])
        )
    (release / "refcoco+" / "dets.json").write_text(json.dumps({"580001": [[1, 2, 30, 40, 0.9]]}))
    refs = [{"ref_id": 7, "ann_id": 70, "image_id": 580001, "split": "testA", "sentences": [{"sent": "man"}]}]
    (refer / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    instances = {
        "images": [{"id": 580001, "height": 480, "width": 640}],
        "annotations": [{"id": 70, "image_id": 580001, "bbox": [1, 2, 30, 40]}],
    }
    (refer / "instances.json").write_text(json.dumps(instances))
    argv = ["data", "prepare", "refcoco+", "--root", str(root), "--out", str(out), "--no-images"]
    assert main(argv) == 0
    assert capsys.readouterr().out.rstrip().endswith("all checks passed")
    refs_read, sizes = read_refer(out / "refcoco+_refs.json", out / "refcoco+_instances.json")
    assert refs_read[7].bbox == (1.0, 2.0, 30.0, 40.0) and sizes == {580001: (480, 640)}
    assert read_dets(out / "refcoco+_dets.json") == {"580001": [[1.0, 2.0, 30.0, 40.0]]}
    assert read_grounding_eval(out / "refcoco+_test.json")[0].ref_id == 7
    # a refs pickle that would run code is refused, the file named
    (refer / "refs(unc).p").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    assert main([*argv, "--out", str(tmp_path / "out2")]) != 0
    err = capsys.readouterr().err
    assert "refs(unc).p: unsafe or corrupt pickle: refused to load os.system" in err


def test_prepare_the_compositionality_benchmarks_from_their_release_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from albef.data.formats_compositional import (
        read_aro_vg,
        read_relation_list,
        read_sugarcrepe,
        read_winoground,
    )

    root, out = tmp_path / "root", tmp_path / "out"
    (root / "winoground" / "data").mkdir(parents=True)
    example = {"id": 0, "caption_0": "a b", "caption_1": "b a", "image_0": "ex_0_img_0", "image_1": "ex_0_img_1",
               "tag": "Noun", "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object"}  # fmt: skip
    (root / "winoground" / "data" / "examples.jsonl").write_text(json.dumps(example) + "\n")
    (root / "sugarcrepe").mkdir()
    for subset in ("add_obj", "add_att", "replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att"):
        record = {"0": {"filename": "000000000139.jpg", "caption": "a dog", "negative_caption": "a cat"}}
        (root / "sugarcrepe" / f"{subset}.json").write_text(json.dumps(record))
    (root / "aro").mkdir()
    case = {"image_id": "1", "image_path": "1.jpg", "bbox_x": 0, "bbox_y": 0, "bbox_w": 5, "bbox_h": 5,
            "true_caption": "the cat is on the mat", "false_caption": "the mat is on the cat"}  # fmt: skip
    (root / "aro" / "visual_genome_relation.json").write_text(json.dumps([dict(case, relation_name="on")]))
    (root / "aro" / "visual_genome_attribution.json").write_text(
        json.dumps([dict(case, attributes=["a", "b"])])
    )
    relations = ["near", "next to", *(f"relation {i}" for i in range(155))]  # the release lists 157
    notebook = {"cells": [{"cell_type": "code", "source": ["import os\n", "os.system('echo never run')\n"]},
                          {"cell_type": "code", "source": [f"symmetric = {relations!r}\n", "print(1)\n"]}]}  # fmt: skip
    (root / "aro" / "Replicate ARO! VG-Relation, VG-Attribution.ipynb").write_text(json.dumps(notebook))
    for name in ("winoground", "sugarcrepe", "aro"):
        assert main(["data", "prepare", name, "--root", str(root), "--out", str(out), "--no-images"]) == 0, (
            name
        )
        assert capsys.readouterr().out.rstrip().endswith("all checks passed")
    assert read_winoground(out / "winoground_examples.jsonl")[0].images == (
        "ex_0_img_0.png",
        "ex_0_img_1.png",
    )
    assert read_sugarcrepe(out / "sugarcrepe_swap_att.json", "swap_att")[0].captions == ("a dog", "a cat")
    assert read_aro_vg(out / "aro_visual_genome_relation.json", "vg_relation")[0].group == "on"
    assert read_relation_list(out / "aro_excluded_relations.json") == relations
