"""``data.bad_images: skip`` trains every task on a world with broken images.

A third of the small world's images are truncated. Each task trains a few steps of the tiny model with skip
mode on: the broken images are replaced in their batches by the next records that load (so the batch keeps
its size, which the ITC queues and distributed training need), and the end-of-run summary lists the files.
Before this, pretraining and retrieval stopped at the first skip (``queue_size 32 must be a multiple of the
global batch size 7``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from albef.cli.main import main
from tests.engine import TINY_OVERRIDES, small_world

COMMANDS = {
    "pretrain": (["pretrain"], "synthetic_pretrain", ["data.test_file=null"]),
    "retrieval": (["finetune", "retrieval", "--no-test"], "synthetic_retrieval", ["data.val_file=null"]),
    "vqa": (["finetune", "vqa", "--no-test"], "synthetic_vqa", ["data.val_file=null"]),
    "nlvr": (["finetune", "nlvr", "--no-test"], "synthetic_nlvr", ["data.val_file=null"]),
    "ve": (["finetune", "ve", "--no-test"], "synthetic_ve", ["data.val_file=null"]),
}


@pytest.fixture(scope="module")
def broken_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    world = tmp_path_factory.mktemp("broken") / "world"
    shutil.copytree(small_world(tmp_path_factory), world)
    images = sorted(
        p for p in world.rglob("*") if p.suffix in (".png", ".jpg") and "_test" not in str(p.parent)
    )
    broken = images[::3]
    for path in broken:
        path.write_bytes(path.read_bytes()[:40])  # truncated: PIL cannot decode it
    return world, broken


@pytest.mark.parametrize("task", list(COMMANDS))
def test_skip_mode_trains_every_task_and_lists_the_skipped_files(
    broken_world: tuple[Path, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str
) -> None:
    world, broken = broken_world
    command, config, extra = COMMANDS[task]
    out = tmp_path / task
    argv = [*command, "--config", config, "--output-dir", str(out), "--no-progress", "--max-steps", "3"]
    for override in (f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, *extra):
        argv += ["--set", override]
    argv += ["--set", "data.bad_images=skip", "--set", "data.batch_size_train=16"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    summary = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert summary and summary[-1].endswith("data.bad_images=skip):"), err[-2000:]
    listed = [
        line.strip()
        for line in err.splitlines()
        if line.startswith("  ") and not line.startswith("  ... and")
    ]
    broken_names = {str(path) for path in broken}
    assert listed and all(any(name in line for name in broken_names) for line in listed)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in metrics if "step_time" in r]
    assert len(steps) == 3  # every step ran
    assert all(round(r["samples_per_s"] * r["step_time"]) == 16 for r in steps)  # on full batches
    if task == "pretrain":
        skipped = json.loads((out / "summary.json").read_text())["skipped_images"]
        assert skipped and set(skipped) <= broken_names
