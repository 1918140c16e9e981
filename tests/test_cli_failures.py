"""Every known failure ends with one line naming what and where, and an exit status of its kind.

Each case runs the CLI as a user would (``albef.cli.main.main``) and checks the exit status, the first line
of the message, and that no earlier file was lost or changed.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch

from albef.cli.main import main
from albef.engine import checkpointing as ckpt
from albef.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DeviceError,
    NonFiniteLossError,
    RunFolderError,
)
from tests.engine import TINY_OVERRIDES, pretrain_argv, small_world
from tests.engine.test_run_safety import snapshot


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


@pytest.fixture(scope="module")
def run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step pretraining run of the tiny model."""
    out = tmp_path_factory.mktemp("run")
    assert main([*pretrain_argv(world, out, "data.test_file=null"), "--max-steps", "2"]) == 0
    return out


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines, "nothing on stderr"
    return lines[-1]


# -- configuration -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.epochs=-1", "optim.epochs must be at least 1, got -1"),
        ("optim.max_steps=-5", "optim.max_steps must be at least 1 (or null: every epoch), got -5"),
        ("data.batch_size_train=0", "data.batch_size_train must be at least 1, got 0"),
        (
            "model.text.fusion_layer=3",
            "model.text.fusion_layer must be between 0 and model.text.num_layers (2), got 3",
        ),
        (
            "model.vision.image_res=60",
            "model.vision.image_res must be a multiple of model.vision.patch_size (8), got 60",
        ),
    ],
)
def test_out_of_range_values_are_config_errors(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, expected: str
) -> None:
    out = tmp_path / "run"
    assert main([*pretrain_argv(world, out, override)]) == ConfigError.exit_code
    line = _error(capsys)
    assert line.startswith("albef pretrain: error: ") and line.endswith(expected), line
    assert not out.exists()  # refused before anything was written


def test_max_steps_flag_is_range_checked(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*pretrain_argv(world, tmp_path / "r"), "--max-steps", "-5"]) == ConfigError.exit_code
    assert _error(capsys).endswith("optim.max_steps must be at least 1 (or null: every epoch), got -5")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("runtime.device=cuda", "runtime.device='cuda', but this machine has no usable CUDA device"),
        ("runtime.precision=amp_fp16", "runtime.precision=amp_fp16 (fp16 autocast) needs a CUDA"),
    ],
)
def test_a_device_or_precision_this_machine_lacks_is_a_device_error(
    world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    override: str,
    expected: str,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [*pretrain_argv(world, tmp_path / "r"), "--set", override]
    assert main(argv) == DeviceError.exit_code
    assert _error(capsys).startswith(f"albef pretrain: error: {expected}")


def test_a_non_finite_loss_names_the_step_and_the_state_of_the_checkpoints(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A learning rate that blows the weights up in the first step: the second step's loss is not finite.
    argv = [
        *pretrain_argv(world, tmp_path / "r", "optim.lr=1e30", "optim.warmup_steps=0"),
        "--max-steps",
        "4",
    ]
    assert main(argv) == NonFiniteLossError.exit_code
    line = _error(capsys)
    assert line.startswith("albef pretrain: error: step 2 (epoch 0, batch 1): "), line
    assert line.endswith("no checkpoint was written before it"), line


# -- checkpoints ------------------------------------------------------------------------------------------------------
class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not a readable checkpoint (empty; truncated, corrupt or not a torch file"),
        (
            b"\x00garbage" * 100,
            "not a readable checkpoint (800 bytes; truncated, corrupt or not a torch file: it is neither a zip",
        ),
        (
            pickle.dumps(_Evil()),
            "refusing to unpickle: the file needs code beyond tensors and plain containers",
        ),
    ],
    ids=["empty", "garbage", "malicious-pickle"],
)
@pytest.mark.parametrize("flag", ["--resume", "--checkpoint"])
def test_a_bad_checkpoint_file_is_one_line_naming_it(
    world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: bytes,
    expected: str,
    flag: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    assert main([*pretrain_argv(world, tmp_path / "r"), "--max-steps", "1", flag, str(bad)]) == 4
    line = _error(capsys)
    assert line.startswith(f"albef pretrain: error: {bad}: {expected}"), line
    assert not (tmp_path / "pwned").exists()  # nothing from the pickle ran
    assert bad.read_bytes() == content


def test_resume_from_another_tasks_checkpoint(
    run: Path, world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = ckpt.load_training_checkpoint(run / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(2))
    payload["config"]["task"] = "vqa"
    other = tmp_path / "vqa.pt"
    torch.save(payload, other)
    assert main([*pretrain_argv(world, tmp_path / "r"), "--resume", str(other)]) == CheckpointError.exit_code
    assert _error(capsys) == (
        f"albef pretrain: error: {other}: a checkpoint of task 'vqa'; this run is 'pretrain' (--resume continues "
        "the same run; to start from its weights use --checkpoint)"
    )


def test_initialising_from_another_tasks_checkpoint(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from albef.config import load_config
    from albef.models import create_model

    cfg = load_config("synthetic_vqa", [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES])
    vqa = tmp_path / "vqa.pt"
    torch.save({"model": create_model("vqa", cfg.model).state_dict()}, vqa)
    assert (
        main([*pretrain_argv(world, tmp_path / "r"), "--checkpoint", str(vqa)]) == CheckpointError.exit_code
    )
    line = _error(capsys)
    assert line.startswith(
        f"albef pretrain: error: {vqa}: no conversion from a vqa checkpoint to a pretrain model"
    )


def test_resume_from_another_model_size(
    run: Path, world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = run / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(2)
    argv = [*pretrain_argv(world, tmp_path / "r", "model.embed_dim=24"), "--resume", str(checkpoint)]
    assert main(argv) == CheckpointError.exit_code
    line = _error(capsys)
    assert line.startswith(
        f"albef pretrain: error: {checkpoint}: written for another model (0 keys missing, 0 unexpected, "
    )
    assert "first: " in line and len(line) < 400  # one short line, not a dump of every key


def test_debug_shows_the_traceback(world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optim\.epochs must be at least 1"):
        main(["--debug", *pretrain_argv(world, tmp_path / "r", "optim.epochs=0")])


def test_help_lists_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for code in (0, 1, 2, 3, 4, 5, 6, 7, 8, 130, 143):
        assert f"\n  {code:>3}  " in text


# -- run folders ------------------------------------------------------------------------------------------------------
def test_pruning_never_deletes_a_later_runs_checkpoints(world: Path, tmp_path: Path) -> None:
    """The old failure: a shorter run into the folder of a longer one pruned the longer one's files."""
    out = tmp_path / "run"
    assert main([*pretrain_argv(world, out, "runtime.keep_last=1"), "--max-steps", "12"]) == 0
    before = snapshot(out)
    assert (
        main([*pretrain_argv(world, out, "runtime.keep_last=1"), "--max-steps", "6"])
        == RunFolderError.exit_code
    )
    assert snapshot(out) == before


def test_resuming_from_an_older_checkpoint_sets_the_later_ones_aside(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [
        *pretrain_argv(world, out, "runtime.checkpoint_every=2", "runtime.keep_last=2", "data.test_file=null")
    ]
    assert main([*argv, "--max-steps", "6"]) == 0
    directory = out / ckpt.CHECKPOINT_DIR
    assert [p.name for p in ckpt.list_checkpoints(directory)] == [ckpt.checkpoint_name(s) for s in (4, 6)]
    later = (directory / ckpt.checkpoint_name(6)).read_bytes()
    assert main([*argv, "--max-steps", "6", "--resume", str(directory / ckpt.checkpoint_name(4))]) == 0
    assert (directory / "superseded" / ckpt.checkpoint_name(6)).read_bytes() == later
    assert [p.name for p in ckpt.list_checkpoints(directory)] == [ckpt.checkpoint_name(s) for s in (4, 6)]


def test_a_synthetic_world_is_never_replaced_by_another_size(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p: p.stat().st_mtime_ns for p in (world / "manifest.json",)}
    argv = pretrain_argv(world, tmp_path / "r", "data.synthetic_size=medium")
    assert main(argv) == ConfigError.exit_code
    line = _error(capsys)
    assert line.startswith(
        f"albef pretrain: error: {world} holds another synthetic world (size small, seed 0, "
    )
    assert "not replacing it" in line
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_reports_follow_the_umask(run: Path) -> None:
    from albef.fileio import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(run / "probe.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((run / "summary.json").stat().st_mode) == 0o666 & ~old


def test_a_full_disk_writing_a_report_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from albef.errors import StorageError
    from albef.fileio import atomic_write_text

    target = atomic_write_text(tmp_path / "report.json", "old")

    def no_space(self: Path, text: str, encoding: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(StorageError, match=rf"could not write {target}: No space left on device"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


# -- scorers ----------------------------------------------------------------------------------------------------------
LABELS = "\n".join(
    json.dumps(
        {
            "identifier": f"dev-{g}-0-{k}",
            "sentence": "s",
            "label": str(bool((g + k) % 2)),
            "left_url": "l",
            "right_url": "r",
        }
    )
    for g in range(3)
    for k in range(2)
)


@pytest.mark.parametrize(
    ("predictions", "expected"),
    [
        ("dev-0-0-0,maybe\n", "line 1: prediction 'maybe' of 'dev-0-0-0' is not True or False"),
        (
            "dev-0-0-0,True\ndev-0-0-0,False\n",
            "line 2: identifier 'dev-0-0-0' is predicted again (first on line 1)",
        ),
        ("dev-0-0-0,True\n", "does not cover"),
    ],
    ids=["unknown-label", "duplicate-id", "missing-ids"],
)
def test_nlvr_score_is_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], predictions: str, expected: str
) -> None:
    labels = tmp_path / "dev.json"
    labels.write_text(LABELS + "\n")
    preds = tmp_path / "p.csv"
    preds.write_text(predictions)
    argv = ["evaluate", "nlvr-score", "--predictions", str(preds), "--labels", str(labels)]
    assert main(argv) == DataError.exit_code
    line = _error(capsys)
    assert line.startswith("albef evaluate: error: ") and expected in line, line


def test_nlvr_score_rejects_duplicate_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "dev.json"
    first = LABELS.splitlines()[0]
    labels.write_text(LABELS + "\n" + first + "\n")
    preds = tmp_path / "p.csv"
    preds.write_text("".join(f"dev-{g}-0-{k},True\n" for g in range(3) for k in range(2)))
    argv = ["evaluate", "nlvr-score", "--predictions", str(preds), "--labels", str(labels)]
    assert main(argv) == DataError.exit_code
    assert _error(capsys) == (
        f"albef evaluate: error: {labels}: the labels name identifier 'dev-0-0-0' twice; each example must appear once"
    )
