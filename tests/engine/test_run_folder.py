"""Run folders: identity hashing, the lock, and what a fresh or resumed run may do in a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from albef.config import load_config
from albef.config.io import to_dict
from albef.engine.run_folder import (
    LOCK_FILE,
    RUN_FILE,
    RunLock,
    claim_run_folder,
    config_differences,
    config_hash,
)
from albef.errors import RunFolderError


def _config(**runtime: object) -> dict[str, object]:
    config = to_dict(load_config("synthetic_pretrain"))
    config["runtime"].update(runtime)  # type: ignore[union-attr]
    return config


def test_where_and_how_often_files_are_written_is_not_part_of_the_identity() -> None:
    base = _config()
    moved = _config(output_dir="elsewhere", checkpoint_every=7, keep_last=9)
    assert config_hash(base) == config_hash(moved)
    assert config_hash(base) != config_hash(_config(seed=43))
    assert config_differences(base, _config(seed=43)) == ["runtime.seed: 42 -> 43"]


def test_a_fresh_run_claims_an_empty_folder_and_records_its_identity(tmp_path: Path) -> None:
    claim = claim_run_folder(tmp_path / "run", _config(), None, argv=["albef", "pretrain"], revision="abc")
    try:
        identity = json.loads((tmp_path / "run" / RUN_FILE).read_text())
        assert identity["config_hash"] == config_hash(_config()) and identity["argv"] == ["albef", "pretrain"]
        assert identity["git"] == "abc" and claim.fresh
        holder = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
    finally:
        claim.lock.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_folder_whose_run_never_stepped_is_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    claim_run_folder(folder, _config(), None).lock.release()  # e.g. stopped by a bad --checkpoint
    claim = claim_run_folder(folder, _config(seed=1), None)
    claim.lock.release()
    assert json.loads((folder / RUN_FILE).read_text())["config_hash"] == config_hash(_config(seed=1))


def test_the_lock_is_exclusive_within_and_across_processes(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    try:
        with pytest.raises(
            RunFolderError, match=rf"{tmp_path} is in use by another run \(pid {os.getpid()} on host "
        ):
            RunLock(tmp_path)
    finally:
        lock.release()
    RunLock(tmp_path).release()  # free again


def test_a_lock_file_without_a_holder_is_stale(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "started": "then"}))
    lock = RunLock(tmp_path)
    try:
        assert lock.stale == {"pid": 999999, "host": "gone", "started": "then"}
    finally:
        lock.release()


def test_legacy_folders_resume_only_with_the_checkpoints_own_config(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "step-00000004.pt").write_bytes(b"x")
    with pytest.raises(RunFolderError, match=r"another run than this one \(runtime.seed: 42 -> 1\)"):
        claim_run_folder(folder, _config(seed=1), "auto", checkpoint_config=_config())
    claim = claim_run_folder(folder, _config(), "auto", checkpoint_config=_config())
    claim.lock.release()
    assert json.loads((folder / RUN_FILE).read_text())["config_hash"] == config_hash(_config())
