"""``albef data synth`` through ``albef.cli.main.main``: reproducible output, reuse, summary, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from albef.cli.main import main


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cli")
    roots = {"a": base / "a", "b": base / "b", "other": base / "other"}
    for name, seed in (("a", "0"), ("b", "0"), ("other", "1")):
        assert main(["data", "synth", "--out", str(roots[name]), "--seed", seed, "--size", "small"]) == 0
    return roots


def test_same_seed_gives_byte_identical_files(worlds: dict[str, Path]) -> None:
    first, second = _digests(worlds["a"]), _digests(worlds["b"])
    assert len(first) > 300
    assert first == second


def test_different_seed_gives_a_different_world(worlds: dict[str, Path]) -> None:
    first, other = _digests(worlds["a"]), _digests(worlds["other"])
    differing = [name for name in first if first[name] != other.get(name)]
    for name in (
        "pretrain.json",
        "retrieval_test.json",
        "vqa_train.json",
        "nlvr_train.json",
        "ve_train.json",
    ):
        assert name in differing
    assert sum(name.startswith("images/") for name in differing) > 100


def test_summary_and_reuse(worlds: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    stamp = (worlds["a"] / "manifest.json").stat().st_mtime_ns
    assert main(["data", "synth", "--out", str(worlds["a"]), "--size", "small"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reused existing world")
    assert (worlds["a"] / "manifest.json").stat().st_mtime_ns == stamp
    for expected in (
        "retrieval_test.json",
        "vqa_v2/annotations_test.json",
        "tokenizer/vocab.txt",
        "t2i R@1",
        "6.25",
    ):
        assert expected in out


def test_progress_goes_to_stderr_and_force_regenerates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "w"
    assert main(["data", "synth", "--out", str(root), "--size", "small", "--image-size", "32"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("generated: ") and "32 px" in captured.out
    assert "rendering images" in captured.err and "rendering images" not in captured.out
    before = _digests(root)
    assert (
        main(["data", "synth", "--out", str(root), "--size", "small", "--image-size", "32", "--force"]) == 0
    )
    assert capsys.readouterr().out.startswith("generated: ")
    assert _digests(root) == before


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--out DIR", "--seed", "--size {small,medium}", "--image-size PX", "--force"):
        assert option in out
    assert "byte-identical" in out


def test_errors_are_one_line_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("not a world")
    assert main(["data", "synth", "--out", str(tmp_path), "--size", "small"]) == 2
    err = capsys.readouterr().err
    assert "albef data: error:" in err and "not overwriting" in err
    assert (tmp_path / "keep.txt").read_text() == "not a world"
    assert main(["data"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--out", str(tmp_path / "x"), "--size", "huge"])
    assert exit_info.value.code == 2
