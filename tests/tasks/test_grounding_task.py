"""The grounding task on the small synthetic world: its data, finetuning from pretraining, evaluation, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from albef.cli import main
from albef.data.formats_grounding import read_dets, read_grounding_eval, read_refer
from albef.data.synthetic.grounding import object_box, referring_expression
from albef.data.synthetic.scene import Scene, SceneObject
from albef.evaluation.grounding import compute_iou
from albef.reporting.schema import RunReport
from tests.engine import TINY_OVERRIDES, small_world

GROUNDING = ("config", "synthetic_grounding", "eval.gradcam_block=1")


def test_expressions_name_one_object_by_its_fewest_attributes() -> None:
    scene = Scene(
        (
            SceneObject("square", "red", "small", 0, 0),
            SceneObject("square", "blue", "small", 0, 1),
            SceneObject("star", "red", "large", 1, 1),
            SceneObject("circle", "green", "small", 2, 2),
            SceneObject("circle", "green", "large", 2, 0),
        )
    )
    assert [referring_expression(scene, o) for o in scene.objects] == [
        "the red square", "the blue square", "the star", "the small circle", "the large circle",
    ]  # fmt: skip
    twins = Scene((SceneObject("cross", "red", "small", 0, 0), SceneObject("cross", "red", "small", 1, 1)))
    assert referring_expression(twins, twins.objects[0]) is None
    # a large object at the centre of the middle cell of a 64-px image: radius 0.38 * 64 / 3
    x, y, w, h = object_box(SceneObject("circle", "red", "large", 1, 1), 64)
    assert (x + w / 2, y + h / 2) == pytest.approx((32.0, 32.0), abs=0.01) and w == pytest.approx(
        16.21, abs=0.01
    )


def test_every_evaluation_ref_has_exactly_one_good_proposal(tmp_path_factory: pytest.TempPathFactory) -> None:
    world = small_world(tmp_path_factory) / "grounding"
    refs, sizes = read_refer(world / "refs.json", world / "instances.json")
    dets = read_dets(world / "dets.json")
    records = read_grounding_eval(world / "refcoco+_val.json") + read_grounding_eval(
        world / "refcoco+_test.json"
    )
    assert {refs[r.ref_id].split for r in records} == {"val", "testA", "testB"}
    for record in records:
        ref = refs[record.ref_id]
        good = [b for b in dets[str(ref.image_id)] if compute_iou(ref.bbox, b) >= 0.5]
        assert len(good) == 1, record
        height, width = sizes[ref.image_id]
        x, y, w, h = ref.bbox
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
    train = json.loads((world / "refcoco+_train.json").read_text())
    assert train and all(r["text"].startswith("the ") for r in train)


def _argv(command: list[str], world: Path, out: Path, *extra: str) -> list[str]:
    argv = [*command, "--output-dir", str(out), "--no-progress", "--config", GROUNDING[1]]
    for override in (
        f"data.root={world}",
        "data.synthetic_size=small",
        *TINY_OVERRIDES,
        GROUNDING[2],
        *extra,
    ):
        argv += ["--set", override]
    return argv


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    world, base = small_world(tmp_path_factory), tmp_path_factory.mktemp("grounding")
    pre_argv = ["pretrain", "--output-dir", str(base / "pre"), "--no-progress"]
    for override in (f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES):
        pre_argv += ["--set", override]
    assert main([*pre_argv, "--max-steps", "2"]) == 0
    checkpoint = base / "pre" / "checkpoints" / "step-00000002.pt"
    argv = _argv(["finetune", "grounding"], world, base / "run", "optim.epochs=1")
    assert main([*argv, "--checkpoint", str(checkpoint)]) == 0
    return base / "run"


def test_finetuning_from_pretraining_validates_and_tests(run: Path) -> None:
    report = RunReport.load(run / "grounding-synthetic-test.json")
    assert list(report.metrics) == ["testA_d", "testB_d"]
    for metric in report.metrics.values():
        assert 0 <= metric.value <= 100 and metric.ci_low is not None and metric.n > 0
    assert set(report.stages) == {"gradcam", "box_scoring"} and report.stages["gradcam"].item == "expression"
    assert report.extra["gradcam_mode"] == "itm" and report.extra["gradcam_block"] == 1
    assert set(report.extra["chance"]) == {"testA_d", "testB_d"}
    results = json.loads((run / "grounding-synthetic-test-results.json").read_text())
    assert len(results) == sum(m.n for m in report.metrics.values())
    hits = {s: [r["correct"] for r in results if r["split"] == s] for s in ("testA", "testB")}
    for split, values in hits.items():
        assert report.metrics[f"{split}_d"].value == pytest.approx(100 * sum(values) / len(values))
    assert (run / "grounding-synthetic-test-heatmaps.png").stat().st_size > 1000
    train = json.loads((run / "grounding_train_report.json").read_text())
    assert "val_d" in json.dumps(train)  # validated on val_d every epoch
    assert torch.load(run / "best.pt", weights_only=True)["model"]


def test_evaluate_cli_itc_mode_and_corrected_stale_rule(
    run: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    world = small_world(tmp_path_factory)
    out = run / "eval"
    argv = _argv(["evaluate", "grounding"], world, out, "eval.gradcam_block=0")
    argv += [
        "--checkpoint",
        str(run / "best.pt"),
        "--split",
        "val",
        "--gradcam-mode",
        "itc",
        "--stale-box",
        "miss",
    ]
    assert main(argv) == 0
    report = RunReport.load(out / "grounding-synthetic-val.json")
    assert list(report.metrics) == ["val_d"] and report.extra["gradcam_mode"] == "itc"
    assert report.extra["stale_rule"] == "miss"
