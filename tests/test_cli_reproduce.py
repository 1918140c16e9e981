"""``albef reproduce``: the official protocol per target, and end to end on a synthetic stand-in data root.

The stand-in is the ``small`` synthetic world in the official file formats; the official presets are pointed
at its files with ``--set`` and shrunk to the tiny test model. The checkpoint is written by the test in the
official ALBEF layout (``ours_to_official``), as a released ``*.pth`` would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from albef.checkpoint import ours_to_official
from albef.cli.main import main
from albef.config import load_config
from albef.models import create_model
from albef.reporting.schema import RunReport
from tests.engine import TINY_OVERRIDES, small_world

STAND_IN = (
    *TINY_OVERRIDES,
    "model.vision.image_res=48",
    "model.vision.patch_size=8",
    "model.text.max_position_embeddings=64",
    "data.tokenizer=tokenizer",
    "data.image_root=.",
    "data.vqa_root=.",
    "data.test_file=retrieval_test.json",
)
"""``--set`` overrides that point a real-data preset at the small world with the tiny model."""


def set_args(values: tuple[str, ...] | list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


def official_checkpoint(world: Path, task: str, config: str, path: Path, *extra: str) -> Path:
    """A tiny ``task`` model with random weights saved in the official layout (``{"model": state}``)."""
    torch.manual_seed(0)
    cfg = load_config(config, [f"data.root={world}", *STAND_IN, *extra])
    model = create_model(task, cfg.model)
    torch.save({"model": ours_to_official(model.state_dict(), task)}, path)
    return path


def test_dry_run_lists_the_official_protocol(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pairs = [f"{t}={t}.pth" for t in ("retrieval-coco", "retrieval-flickr", "vqa", "nlvr", "ve", "grounding")]
    argv = ["reproduce", "all", "--checkpoints", *pairs, "--data-root", "/data", "--out", str(tmp_path)]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "retrieval-coco/coco-test: 384 px, k 256, split test -> paper split test, fine-tuned" in out
    assert "retrieval-flickr/flickr30k-test: 384 px, k 128, split test -> paper split test" in out
    assert "flickr30k-test-zeroshot: 384 px, k 128, split test -> paper split test, zero-shot" in out
    assert "vqa/vqa-test: 384 px, k 128, split test -> paper split test-dev" in out
    assert "nlvr/nlvr-test: 384 px, split test -> paper split test-P" in out
    assert "ve/ve-dev: 384 px, split dev -> paper split val" in out
    assert "grounding/grounding-test: 384 px, split test -> paper split test, fine-tuned" in out
    commands = [line for line in out.splitlines() if line.startswith("albef ")]
    assert len(commands) == 11 and all("--set data.root=/data" in line for line in commands)
    zero_shot = next(line for line in commands if "zeroshot" in line)
    assert "--config retrieval_flickr" in zero_shot and "--checkpoint retrieval-coco.pth" in zero_shot
    assert not list(tmp_path.iterdir())  # nothing run, nothing written


def test_missing_checkpoint_and_unknown_model_are_usage_errors(tmp_path: Path) -> None:
    base = ["reproduce", "all", "--data-root", str(tmp_path), "--dry-run"]
    assert main([*base, "--checkpoints", "vqa=v.pth"]) == 2
    assert main([*base[:1], "vqa", *base[2:], "--checkpoint", "v.pth", "--model", "ALBEF 1B"]) == 2
    assert main(["reproduce", "vqa", "--data-root", str(tmp_path), "--checkpoint", "nope.pth"]) == 2


def test_retrieval_coco_end_to_end(world: Path, tmp_path: Path) -> None:
    checkpoint = official_checkpoint(world, "retrieval", "retrieval_coco", tmp_path / "coco.pth")
    out = tmp_path / "out"
    argv = ["reproduce", "retrieval-coco", "--checkpoint", str(checkpoint), "--data-root", str(world)]
    assert main([*argv, "--out", str(out), *set_args(STAND_IN)]) == 0
    report = RunReport.load(out / "retrieval-coco" / "coco-test" / "retrieval-coco-test.json")
    assert (report.task, report.dataset, report.split) == ("retrieval", "coco", "test")
    assert report.extra["zero_shot"] is False and report.extra["eval_split"] == "test"
    paper = (out / "paper.md").read_text()
    rows = [line for line in paper.splitlines() if "| retrieval-coco/coco-test" in line]
    metrics = {"txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10"}
    assert len(rows) == len(metrics)  # one row per ALBEF 4M COCO cell
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        metric, paper_value, measured, interval, inside, delta = cells[5:11]
        assert metric in metrics and cells[3:5] == ["coco", "test"]
        assert abs(float(measured) - float(paper_value) - float(delta)) < 0.02
        assert float(measured) == pytest.approx(report.metrics[metric].value, abs=0.01)
        low, high = (float(x) for x in interval.strip("[]").split(","))
        assert low <= float(measured) <= high
        assert inside == ("yes" if low <= float(paper_value) <= high else "no")
    assert "Every selected paper cell is covered." in paper  # Flickr cells are out of this target's scope


def test_vqa_end_to_end_writes_server_file_and_scores_val(world: Path, tmp_path: Path) -> None:
    extra = ("data.answer_list=answer_list.json", "data.test_file=vqa_test.json")
    checkpoint = official_checkpoint(world, "vqa", "vqa", tmp_path / "vqa.pth", *extra)
    out = tmp_path / "out"
    argv = ["reproduce", "vqa", "--checkpoint", str(checkpoint), "--data-root", str(world), "--out", str(out)]
    records = json.loads((world / "vqa_train.json").read_text())
    val = tmp_path / "vqa_val.json"  # the VQA (not VG) training records, which carry question ids and answers
    val.write_text(json.dumps([r for r in records if "question_id" in r][:32]))
    sets = [*STAND_IN, *extra, f"data.val_file={val}", "data.batch_size_test=64"]
    assert main([*argv, *set_args(sets), "--set", "eval.k_test=8"]) == 0
    assert (out / "vqa" / "vqa-test" / "vqa_result_test.json").is_file()
    test = RunReport.load(out / "vqa" / "vqa-test" / "vqa_test_report.json")
    val = RunReport.load(out / "vqa" / "vqa-val" / "vqa_val_report.json")
    assert (test.dataset, test.split, val.split) == ("vqa_v2", "test-dev", "val")
    assert "overall" in val.metrics and "overall" not in test.metrics  # test-dev is scored by the server
    paper = (out / "paper.md").read_text()
    not_covered = paper.split("Paper cells not covered")[1]
    assert "test-dev" in not_covered and "74.54" in not_covered
    assert f"`vqa/vqa-val` (vqa_v2 val): overall {val.metrics['overall'].value:.2f}" in paper


def test_grounding_end_to_end_loads_the_bare_released_form(world: Path, tmp_path: Path) -> None:
    """refcoco.pth is a bare state dict without teachers or queues (ALBEF#50): reproduce loads and scores it."""
    torch.manual_seed(0)
    cfg = load_config("grounding", [f"data.root={world}", *STAND_IN])
    official = ours_to_official(create_model("grounding", cfg.model).state_dict(), "grounding")
    bare = {
        k: v for k, v in official.items() if "_m." not in k and not k.endswith("_queue") and k != "queue_ptr"
    }
    torch.save(bare, tmp_path / "refcoco.pth")
    out = tmp_path / "out"
    argv = [
        "reproduce",
        "grounding",
        "--checkpoint",
        str(tmp_path / "refcoco.pth"),
        "--data-root",
        str(world),
    ]
    files = [f"data.{key}=grounding/{name}" for key, name in (
        ("val_file", "refcoco+_val.json"), ("test_file", "refcoco+_test.json"), ("det_file", "dets.json"),
        ("refs_file", "refs.json"), ("instances_file", "instances.json"))]  # fmt: skip
    assert main([*argv, "--out", str(out), *set_args([*STAND_IN, *files, "eval.gradcam_block=1"])]) == 0
    test = RunReport.load(out / "grounding" / "grounding-test" / "grounding-refcoco+-test.json")
    val = RunReport.load(out / "grounding" / "grounding-val" / "grounding-refcoco+-val.json")
    assert list(test.metrics) == ["testA_d", "testB_d"] and list(val.metrics) == ["val_d"]
    assert (out / "grounding" / "grounding-test" / "grounding-refcoco+-test-heatmaps.png").is_file()
    paper = (out / "paper.md").read_text()  # compared with ALBEF 14M, the paper's grounding model, by default
    rows = [line for line in paper.splitlines() if line.startswith("| grounding/")]
    assert [row.split("|")[6].strip() for row in rows] == ["val_d", "testA_d", "testB_d"]
    assert all("grounding_refcoco+" in row and "| ALBEF 14M " in row for row in rows)
    assert f"{val.metrics['val_d'].value:.2f}" in rows[0] and "58.46" in rows[0]
    assert "not yet confirmed" in paper  # the recalled headline numbers carry their caveat
