"""A task registered in ``albef.tasks.TASKS`` gets its ``albef finetune`` / ``albef evaluate`` subcommands, its
own options on them, and those options back by name: no CLI module is written per task."""

from __future__ import annotations

from pathlib import Path

import pytest

from albef.cli.main import build_parser
from albef.cli.task_options import option_overrides, option_values
from albef.tasks import TASKS, Option
from albef.tasks.nlvr import VETask


class ToyTask(VETask):
    """A new task as a later issue would add it: a task class with its descriptions and options."""

    help = "a toy task"
    finetune_description = "Finetune the toy task."
    evaluate_description = "Evaluate the toy task."
    splits = ("dev", "test")
    finetune_options = (Option("--frozen", "freeze the encoders", switch=True, override="model.alpha=0.0"),)
    evaluate_options = (Option("--flavour", "which flavour", choices=("a", "b"), default="a"),)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> type[ToyTask]:
    import albef.tasks.nlvr  # noqa: F401  (registers the built-in tasks first)

    monkeypatch.setitem(TASKS._items, "toy", ToyTask)  # type: ignore[attr-defined]
    return ToyTask


def test_a_registered_task_gets_both_commands_with_its_options(toy: type[ToyTask]) -> None:
    parser = build_parser()
    args = parser.parse_args(["evaluate", "toy", "--checkpoint", "w.pt", "--flavour", "b", "--out", "o"])
    assert args.task_class is toy and args.task_name == "toy"
    assert (args.split, args.output_dir, args.config) == (
        "dev",
        "o",
        "synthetic_toy",
    )  # first split, --out alias
    assert option_values(args, toy.evaluate_options) == {"flavour": "b"}
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "toy", "--checkpoint", "w.pt", "--flavour", "c"])  # not a choice
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "toy", "--checkpoint", "w.pt", "--split", "val"])  # not a toy split

    args = parser.parse_args(["finetune", "toy", "--frozen", "--no-test"])
    assert option_values(args, toy.finetune_options) == {"frozen": True} and args.no_test
    assert option_overrides(args, toy.finetune_options) == ["model.alpha=0.0"]
    args = parser.parse_args(["finetune", "toy"])
    assert option_overrides(args, toy.finetune_options) == []


def test_built_in_tasks_keep_their_commands() -> None:
    parser = build_parser()
    for task in ("retrieval", "vqa", "nlvr", "ve"):
        assert parser.parse_args(["finetune", task]).task_name == task
        assert parser.parse_args(["evaluate", task, "--checkpoint", "w.pt"]).task_name == task
    with pytest.raises(SystemExit):  # text assignment has its own command, pretraining has no test split
        parser.parse_args(["finetune", "nlvr_pretrain"])
    args = parser.parse_args(["evaluate", "nlvr", "--checkpoint", "w.pt"])
    assert args.split == "dev" and args.predictions is None


def test_a_task_command_refuses_another_tasks_config(
    toy: type[ToyTask], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from albef.cli.main import main

    checkpoint = tmp_path / "w.pt"
    checkpoint.write_bytes(b"")
    argv = [
        "evaluate",
        "toy",
        "--config",
        "synthetic_ve",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "config 'synthetic_ve' is for task 've', not toy" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [checkpoint]  # refused before any work


def test_every_evaluate_command_defaults_to_a_preset_of_its_own_task() -> None:
    """``albef evaluate <task>`` without ``--config`` loads ``synthetic_<task>`` or the task's own default."""
    from albef.config import load_config
    from albef.tasks import all_tasks

    for name, task in all_tasks():
        if task.evaluate_description is None:
            continue
        cfg = load_config(task.default_config or f"synthetic_{name}")
        assert cfg.task == name, name
