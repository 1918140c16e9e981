"""The CLI front door: help, listings, config resolution and error reporting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from albef.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_subcommands_with_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("data", "config", "ls", "quickstart"):
        assert f"    {command}" in out
    assert "list what can be named" in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: albef" in capsys.readouterr().out


def test_python_dash_m_albef_works() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "albef", "--version"], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert proc.stdout.startswith("albef ")


def test_ls_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "configs"]) == 0
    out = capsys.readouterr().out
    assert "retrieval_coco" in out and "synthetic_pretrain" in out
    assert "Official Retrieval_coco.yaml" in out


def test_config_show_applies_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "resolved.yaml"
    code = main(
        ["config", "show", "--config", "retrieval_flickr", "--set", "optim.lr=3e-5", "--out", str(out_file)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "lr: 3.0e-05" in printed and "k_test: 128" in printed
    assert out_file.read_text() == printed


def test_config_errors_are_one_line_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--config", "synthetic_pretrain", "--set", "optim.lr=fast"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("albef config: error:") and "optim.lr" in err and "expected float" in err
    assert main(["config", "show", "--config", "no_such_preset"]) == 2
    assert "valid presets:" in capsys.readouterr().err


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():  # type: ignore[union-attr]
        assert subparser.description, f"'albef {name}' has no description"


def test_datasets_folder_is_not_a_package() -> None:
    # datasets/ holds recipes only; a package would shadow Hugging Face `datasets`.
    assert (REPO / "datasets").is_dir()
    assert not (REPO / "datasets" / "__init__.py").exists()
