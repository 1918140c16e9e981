"""``albef evaluate winoground|sugarcrepe|aro`` end to end on files in the official formats: every reported score
equals the model scoring that one pair on its own, and the metrics equal the hand rules on those scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from albef.cli.main import main
from albef.config import load_config
from albef.data.images import load_image
from albef.data.synthetic.probes import SUBSETS
from albef.data.text import pre_caption
from albef.data.tokenizer import load_tokenizer
from albef.data.transforms import build_test_transform
from albef.evaluation.compositional import contrast_outcomes, winoground_outcomes
from albef.models import create_model
from albef.models.albef import ALBEFRetrieval
from albef.reporting.schema import RunReport
from tests.engine import TINY_OVERRIDES, small_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


def sets(world: Path, *extra: str) -> list[str]:
    values = [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, *extra]
    return [arg for value in values for arg in ("--set", value)]


@pytest.fixture(scope="module")
def checkpoint(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = load_config("synthetic_retrieval", [f"data.root={world}", *TINY_OVERRIDES])
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"model": create_model("retrieval", cfg.model).state_dict()}, path)
    return path


class PairByPair:
    """The reference: one image and one caption through the model at a time."""

    def __init__(self, world: Path, checkpoint: Path, config: str) -> None:
        self.cfg = load_config(config, [f"data.root={world}", *TINY_OVERRIDES])
        self.model = create_model("retrieval", self.cfg.model)
        assert isinstance(self.model, ALBEFRetrieval)
        self.model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
        self.model.eval()
        self.tokenizer = load_tokenizer(world / "tokenizer")
        self.transform = build_test_transform(self.cfg.model.vision.image_res)

    @torch.inference_mode()
    def __call__(self, image: Path, caption: str, box: Any = None) -> tuple[float, float]:
        picture = load_image(image)
        if box is not None:
            x, y, w, h = box
            picture = picture.crop((x, y, x + w, y + h))
        enc_image = self.model.encode_image(self.transform(picture)[None])
        tokens = self.tokenizer.encode([pre_caption(caption, 30)], padding="max_length", max_length=30)
        enc_text = self.model.encode_text(tokens.input_ids, tokens.attention_mask)
        itm = self.model.itm_logits(self.model.fuse(enc_text, enc_image.embeds))[0, 1]
        return float((enc_image.feat * enc_text.feat).sum()), float(itm)


def samples(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_winoground_probes_score_every_pair_as_the_model_does_alone(
    world: Path, checkpoint: Path, tmp_path: Path
) -> None:
    argv = ["evaluate", "winoground", "--config", "synthetic_winoground", "--checkpoint", str(checkpoint)]
    assert main([*argv, "--out", str(tmp_path), "--log-samples", *sets(world)]) == 0
    report = RunReport.load(tmp_path / "winoground-synthetic-test.json")
    lines = samples(tmp_path / "winoground-synthetic-test-samples.jsonl")
    examples = [json.loads(x) for x in (world / "probes/winoground/examples.jsonl").read_text().splitlines()]
    assert len(lines) == len(examples) == 8 and report.extra["pairs_scored"] == 4 * 8
    reference = PairByPair(world, checkpoint, "synthetic_winoground")
    root = world / "images/probes/winoground"
    for line, ex in zip(lines, examples, strict=True):
        for c in (0, 1):
            for i in (0, 1):
                itc, itm = reference(root / f"{ex[f'image_{i}']}.png", ex[f"caption_{c}"])
                assert line["itc"][c][i] == pytest.approx(itc, abs=1e-5)
                assert line["itm"][c][i] == pytest.approx(itm, abs=1e-4)
    for scorer in ("itc", "itm", "itm_itc"):
        table = torch.tensor([line[scorer] for line in lines]) if scorer != "itm_itc" else None
        if table is None:
            table = torch.tensor([line["itm"] for line in lines]) + torch.tensor(
                [line["itc"] for line in lines]
            )
        for name, hits in winoground_outcomes(table).items():
            metric = report.metrics[f"{scorer}/{name}"]
            assert metric.value == pytest.approx(100 * hits.double().mean().item(), abs=1e-9)
            assert metric.n == 8 and metric.ci_low is not None
    assert report.extra["chance"]["itm/group_score"] == pytest.approx(100 / 6)
    markdown = (tmp_path / "winoground-synthetic-test.md").read_text()
    assert "## ITC vs ITM vs ITM + ITC" in markdown and "| group_score " in markdown


def test_sugarcrepe_probes_cover_every_subset_and_read_the_ent_spelling(
    world: Path, checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    renamed = tmp_path / "data" / "swap_ent.json"  # some copies of the release spell obj as ent
    renamed.write_text((world / "probes/sugarcrepe/swap_obj.json").read_text())
    argv = ["evaluate", "sugarcrepe", "--config", "synthetic_sugarcrepe", "--checkpoint", str(checkpoint)]
    out = tmp_path / "out"
    assert (
        main(
            [
                *argv,
                "--out",
                str(out),
                "--log-samples",
                *sets(world, f"data.split_files.swap_obj={tmp_path / 'data'}"),
            ]
        )
        == 0
    )
    report = RunReport.load(out / "sugarcrepe-synthetic-test.json")
    lines = samples(out / "sugarcrepe-synthetic-test-samples.jsonl")
    assert {line["subset"] for line in lines} == set(SUBSETS)
    reference = PairByPair(world, checkpoint, "synthetic_sugarcrepe")
    for line in lines[:6]:
        for j, caption in enumerate(line["captions"]):
            itc, itm = reference(world / "images/probes/sugarcrepe" / line["image"], caption)
            assert line["itc"][j] == pytest.approx(itc, abs=1e-5) and line["itm"][j] == pytest.approx(
                itm, abs=1e-4
            )
    itm = torch.tensor([line["itm"] for line in lines])
    hits = contrast_outcomes(itm).double()
    assert report.metrics["itm/accuracy"].value == pytest.approx(100 * hits.mean().item())
    per_subset = {s: hits[[line["subset"] == s for line in lines]].mean().item() * 100 for s in SUBSETS}
    assert report.metrics["itm/macro_accuracy"].value == pytest.approx(
        sum(per_subset.values()) / len(SUBSETS)
    )
    assert report.metrics["itm/swap_att"].value == pytest.approx(per_subset["swap_att"])


def test_aro_vg_relation_crops_to_the_box_and_leaves_out_the_listed_relations(
    world: Path, checkpoint: Path, tmp_path: Path
) -> None:
    images = sorted((world / "images/probes/sugarcrepe").glob("*.png"))[:3]
    records = [
        {"image_id": str(i), "image_path": path.name, "bbox_x": 4, "bbox_y": 8, "bbox_w": 40, "bbox_h": 30,
         "true_caption": "a red circle above a star", "false_caption": "a star above a red circle",
         "relation_name": rel}
        for i, (path, rel) in enumerate(zip(images, ("above", "above", "near"), strict=True))
    ]  # fmt: skip
    (tmp_path / "vgr.json").write_text(json.dumps(records))
    (tmp_path / "excluded.txt").write_text("near\n")
    argv = ["evaluate", "aro", "--config", "synthetic_sugarcrepe", "--split", "vg_relation"]
    config_sets = [
        "task=aro", f"data.split_files={{vg_relation: {tmp_path / 'vgr.json'}}}",
        f"data.split_image_roots={{vg_relation: {world / 'images/probes/sugarcrepe'}}}",
        f"data.excluded_relations={tmp_path / 'excluded.txt'}",
    ]  # fmt: skip
    out = tmp_path / "out"
    rc = main(
        [
            *argv,
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--log-samples",
            *sets(world, *config_sets),
        ]
    )
    assert rc == 0
    report = RunReport.load(out / "aro-synthetic-vg_relation.json")
    lines = samples(out / "aro-synthetic-vg_relation-samples.jsonl")
    reference = PairByPair(world, checkpoint, "synthetic_sugarcrepe")
    for line, path in zip(lines, images, strict=True):
        itc, itm = reference(path, line["captions"][0], box=(4, 8, 40, 30))
        assert line["itc"][0] == pytest.approx(itc, abs=1e-5) and line["itm"][0] == pytest.approx(
            itm, abs=1e-4
        )
    hits = contrast_outcomes(torch.tensor([line["itm"] for line in lines])).double()
    assert report.metrics["itm/macro_accuracy"].value == pytest.approx(
        100 * hits[:2].mean().item()
    )  # "near" out
    assert report.metrics["itm/accuracy"].value == pytest.approx(100 * hits.mean().item())
    assert report.metrics["itm/near"].group == "itm by relation"
