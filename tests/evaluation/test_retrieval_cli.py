"""``albef evaluate retrieval``: reports, zero-shot files, bad checkpoints and data, a 2-process gloo run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from albef.cli.main import main
from albef.config import load_config
from albef.models import create_model
from albef.reporting.schema import RunReport
from tests.engine import TINY_OVERRIDES, small_world

REPO_ROOT = Path(__file__).resolve().parents[2]
STEM = "retrieval-synthetic-test"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


def overrides(world: Path, *extra: str) -> list[str]:
    return [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, *extra]


def set_args(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def random_checkpoint(task: str, world: Path, path: Path) -> Path:
    """A ``task`` checkpoint of the tiny test model (seeded random weights, our layout) at ``path``."""
    torch.manual_seed(0)
    model = create_model(task, load_config(f"synthetic_{task}", overrides(world)).model)
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A retrieval checkpoint of the tiny test model (random weights, our layout)."""
    return random_checkpoint("retrieval", world, tmp_path_factory.mktemp("ckpt") / "model.pt")


def evaluate(world: Path, checkpoint: Path | str, out: Path, *extra: str) -> int:
    argv = ["evaluate", "retrieval", "--checkpoint", str(checkpoint), "--out", str(out), "--k", "8"]
    return main([*argv, *set_args(overrides(world)), *extra])


def test_evaluate_writes_json_and_markdown_reports(world: Path, checkpoint: Path, tmp_path: Path) -> None:
    assert evaluate(world, checkpoint, tmp_path, "--save-scores") == 0
    report = RunReport.load(tmp_path / f"{STEM}.json")
    assert (report.kind, report.task, report.dataset, report.split) == (
        "evaluation",
        "retrieval",
        "synthetic",
        "test",
    )
    assert report.checkpoint is not None and report.checkpoint.sha256 and "r_mean" in report.metrics
    assert report.extra["k"] == 8 and report.environment.torch
    markdown = (tmp_path / f"{STEM}.md").read_text()
    assert re.search(r"^\| txt_r1 +\| [0-9.]+ ± [0-9.]+ +\|", markdown, re.M)  # value ± interval
    assert re.search(r"\| chance +\|", markdown)  # the chance level beside every recall
    scores = torch.load(tmp_path / f"{STEM}-scores.pt")
    assert scores["scores_i2t"].shape == (16, 80)


def test_an_earlier_report_is_kept_unless_overwrite_and_bars_follow_no_progress(
    world: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(world, checkpoint, tmp_path) == 0
    err = capsys.readouterr().err
    assert "encode images" in err and "encode texts" in err and "ITM re-rank" in err  # bars by default
    before = (tmp_path / f"{STEM}.json").read_bytes()
    assert evaluate(world, checkpoint, tmp_path) == 8
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"albef evaluate: error: {tmp_path / STEM}.json exists (an earlier evaluation); pass --overwrite to "
        "replace it, or write elsewhere (--out / --output-dir)"
    )
    assert (tmp_path / f"{STEM}.json").read_bytes() == before
    assert evaluate(world, checkpoint, tmp_path, "--overwrite", "--no-progress") == 0
    err = capsys.readouterr().err
    assert "encode images" not in err and "ITM re-rank" not in err
    for name in ("metrics.csv", "stages.csv", "report.md", "recall_at_k.png"):  # rendered like the others
        assert (tmp_path / name).is_file(), name


def test_evaluate_another_split_file_in_the_maccap_layout(
    world: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """Any checkpoint on any split file (zero-shot): the MacCap Flickr30K layout is recognised."""
    records = json.loads((world / "retrieval_test.json").read_text())
    maccap = [{"split": "test", "image_name": r["image"], "captions": r["caption"]} for r in records]
    path = tmp_path / "flickr_like.json"
    path.write_text(json.dumps(maccap))
    (tmp_path / "flickr30k-images").symlink_to(world)  # the layout's image folder
    code = evaluate(
        world, checkpoint, tmp_path, "--annotations", str(path), "--image-root", str(tmp_path), "--itc-only"
    )
    assert code == 0
    assert RunReport.load(tmp_path / f"{STEM}.json").extra["itc_only"] is True


@pytest.mark.parametrize("kind", ["missing", "garbage", "other_model"])
def test_bad_checkpoints_exit_4(
    world: Path, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.pt"
    if kind == "garbage":
        path.write_text("not a checkpoint")
    elif kind == "other_model":  # the default synthetic size does not fit the tiny test model
        torch.save(create_model("retrieval", load_config("synthetic_retrieval").model).state_dict(), path)
    assert evaluate(world, path, tmp_path) == 4
    assert "albef evaluate: error:" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["caption_string", "missing_image"])
def test_bad_data_exits_3(
    world: Path, checkpoint: Path, tmp_path: Path, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    records = json.loads((world / "retrieval_test.json").read_text())
    if problem == "caption_string":
        records[3]["caption"] = "a plain string instead of a list"
    else:
        records[3]["image"] = "images/no_such_image.png"
    path = tmp_path / "split.json"
    path.write_text(json.dumps(records))
    assert evaluate(world, checkpoint, tmp_path, "--annotations", str(path)) == 3
    err = capsys.readouterr().err
    assert "split.json" in err and ("record 3" in err or "no_such_image" in err)


@pytest.mark.slow  # two fresh interpreters: about 25 s on a shared 2-core host
def test_two_gloo_processes_give_the_single_process_matrices(
    world: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """Queries sharded over 2 CPU ranks, rows gathered: the same score matrices as one process."""
    single, double = tmp_path / "one", tmp_path / "two"
    assert evaluate(world, checkpoint, single, "--save-scores") == 0
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    args = ["evaluate", "retrieval", "--checkpoint", str(checkpoint), "--out", str(double), "--k", "8"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "albef",
    ]
    proc = subprocess.run(
        [*command, *args, "--save-scores", *set_args(overrides(world))],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = torch.load(single / f"{STEM}-scores.pt"), torch.load(double / f"{STEM}-scores.pt")
    for name in ("scores_i2t", "scores_t2i"):
        assert torch.equal(one[name], two[name]), name
    assert RunReport.load(double / f"{STEM}.json").extra["world_size"] == 2


def test_log_samples_lists_each_query_s_best_candidates_and_true_rank(
    world: Path, checkpoint: Path, tmp_path: Path
) -> None:
    assert evaluate(world, checkpoint, tmp_path, "--save-scores", "--log-samples") == 0
    report = RunReport.load(tmp_path / f"{STEM}.json")
    scores = torch.load(tmp_path / f"{STEM}-scores.pt")
    lines = [json.loads(x) for x in (tmp_path / f"{STEM}-samples.jsonl").read_text().splitlines()]
    images = [r for r in lines if r["query"] == "image"]
    texts = [r for r in lines if r["query"] == "text"]
    assert (len(images), len(texts)) == (16, 80) and report.extra["samples_file"].endswith("samples.jsonl")
    first = images[0]
    best = torch.argsort(-scores["scores_i2t"][0], stable=True)[:10].tolist()
    assert [c["text_id"] for c in first["top"]] == best
    assert first["top"][0]["score"] == pytest.approx(float(scores["scores_i2t"][0, best[0]]), abs=1e-6)
    assert all(c["true"] == (c["text_id"] in first["true_text_ids"]) for c in first["top"])
    # the ranks are the metric's: recall@1 from them equals the report's
    assert 100 * sum(r["rank"] == 0 for r in images) / 16 == pytest.approx(report.metrics["txt_r1"].value)
    assert 100 * sum(r["rank"] < 5 for r in texts) / 80 == pytest.approx(report.metrics["img_r5"].value)
    assert texts[3]["caption"] and all(
        c["true"] == (c["image_id"] == texts[3]["true_image_id"]) for c in texts[3]["top"]
    )
