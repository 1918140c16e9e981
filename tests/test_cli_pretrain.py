"""``albef pretrain`` through ``albef.cli.main.main`` on the small synthetic world with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from albef.cli.main import main
from albef.config import load_config
from albef.engine import checkpointing as ckpt
from tests.engine import pretrain_argv, small_world

ZERO_SHOT_KEYS = {"txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "r_mean"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


@pytest.fixture(scope="module")
def run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    assert main([*pretrain_argv(world, out), "--max-steps", "3"]) == 0
    return out


def test_pretrain_writes_the_run_directory(run: Path) -> None:
    assert (run / "config.yaml").is_file()
    assert [p.name for p in ckpt.list_checkpoints(run / ckpt.CHECKPOINT_DIR)] == ["step-00000003.pt"]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


def test_config_yaml_is_the_resolved_config(run: Path) -> None:
    cfg = load_config(run / "config.yaml")
    assert cfg.task == "pretrain"
    assert cfg.runtime.output_dir == str(run)
    assert cfg.optim.max_steps == 3  # --max-steps folded in
    assert (cfg.model.vision.width, cfg.model.queue_size, cfg.data.batch_size_train) == (32, 32, 8)


def test_summary_has_losses_and_zero_shot_itc(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3
    assert summary["checkpoint"] == str(run / ckpt.CHECKPOINT_DIR / "step-00000003.pt")
    for part in ("loss_first", "loss_last"):
        assert set(summary[part]) == {"itc_loss", "itm_loss", "mlm_loss", "loss"}
    assert summary["samples_per_s"] > 0
    metrics = summary["zero_shot_itc"]
    assert set(metrics) >= ZERO_SHOT_KEYS
    assert all(0.0 <= metrics[k] <= 100.0 for k in ZERO_SHOT_KEYS)
    assert metrics["r_mean"] == pytest.approx(sum(metrics[k] for k in ZERO_SHOT_KEYS - {"r_mean"}) / 6)


def test_a_config_for_another_task_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["pretrain", "--config", "synthetic_vqa", "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "albef pretrain: error:" in err and "is for task 'vqa', not pretrain" in err
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_resume_from_a_missing_file_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "step-00000009.pt"
    assert main(["pretrain", "--output-dir", str(tmp_path / "x"), "--resume", str(missing)]) == 4
    assert f"--resume {missing}: no such checkpoint file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_resume_auto_without_checkpoints_starts_fresh(world: Path, tmp_path: Path) -> None:
    argv = [*pretrain_argv(world, tmp_path, "data.test_file=null"), "--max-steps", "1", "--resume", "auto"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 1
    assert "zero_shot_itc" not in summary  # no data.test_file, no evaluation


# Last: it runs again in the module's run directory.
def test_resume_of_a_finished_run_takes_no_step(run: Path) -> None:
    """``--resume auto`` on a run that reached its last step trains nothing and keeps the log as it was."""
    before = (run / "metrics.jsonl").read_text()
    argv = ["pretrain", "--config", str(run / "config.yaml"), "--resume", "auto", "--no-progress"]
    assert main(argv) == 0
    assert (run / "metrics.jsonl").read_text() == before
    assert json.loads((run / "summary.json").read_text())["steps"] == 3


def test_log_every_prints_a_status_line_without_a_progress_bar(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        *pretrain_argv(world, tmp_path / "a", "runtime.log_every=2", "data.test_file=null"),
        "--max-steps",
        "5",
    ]
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert [line.split(" (")[0] for line in lines] == ["step 2/5", "step 4/5", "step 5/5"]  # and the last
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0].startswith(f"step 2/5 (epoch 0): loss {records[1]['loss']:.4f} (itc ")
    argv = [
        *pretrain_argv(world, tmp_path / "b", "runtime.log_every=0", "data.test_file=null"),
        "--max-steps",
        "2",
    ]
    assert main(argv) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
