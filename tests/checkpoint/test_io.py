"""Reading every official file form, refusing unsafe pickles, and atomic saving (torch and safetensors)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from albef.checkpoint import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    atomic_torch_save,
    read_state_dict,
    save_state_dict,
    unwrap_state_dict,
)


def small_state_dict() -> dict[str, torch.Tensor]:
    words = torch.randn(10, 4)
    bias = torch.randn(10)
    return {
        "text_encoder.embeddings.word_embeddings.weight": words,
        "mlm_head.decoder.weight": words,  # tied
        "mlm_head.bias": bias,
        "mlm_head.decoder.bias": bias,
        "queue.queue_ptr": torch.tensor([3]),
        "temp": torch.tensor(0.07),
        "view": torch.arange(20.0)[5:9],  # a view into a larger storage
    }


def assert_same_values(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("wrap", ["bare", "model", "model_with_extras", "state_dict"])
def test_reads_bare_and_wrapped_torch_files(tmp_path: Path, wrap: str) -> None:
    sd = small_state_dict()
    obj = {
        "bare": sd,
        "model": {"model": sd},
        "model_with_extras": {"model": sd, "optimizer": {"state": {}}, "config": {"lr": 1e-4}, "epoch": 3},
        "state_dict": {"state_dict": sd},
    }[wrap]
    torch.save(obj, tmp_path / "ckpt.pth")
    assert_same_values(read_state_dict(tmp_path / "ckpt.pth"), sd)


def test_round_trips_safetensors_with_tied_tensors(tmp_path: Path) -> None:
    sd = small_state_dict()
    path = save_state_dict(sd, tmp_path / "w.safetensors", metadata={"task": "pretrain"})
    back = read_state_dict(path)
    assert_same_values(back, sd)
    # Tied tensors are stored as separate equal copies: the file holds every name.
    assert set(load_file(str(path))) == set(sd)
    assert (
        sd["mlm_head.decoder.weight"] is sd["text_encoder.embeddings.word_embeddings.weight"]
    )  # input untouched


def test_torch_save_keeps_sharing(tmp_path: Path) -> None:
    sd = small_state_dict()
    back = read_state_dict(save_state_dict(sd, tmp_path / "w.pt"))
    assert_same_values(back, sd)
    words = back["text_encoder.embeddings.word_embeddings.weight"]
    assert back["mlm_head.decoder.weight"].untyped_storage().data_ptr() == words.untyped_storage().data_ptr()


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "w.pt"
    save_state_dict({"a": torch.zeros(2)}, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["w.pt"]

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_state_dict({"a": torch.ones(2)}, target)
    # The old file survives intact and no temporary file is left behind.
    assert sorted(p.name for p in target.parent.iterdir()) == ["w.pt"]
    assert torch.equal(read_state_dict(target)["a"], torch.zeros(2))


def test_atomic_torch_save_any_object(tmp_path: Path) -> None:
    path = atomic_torch_save({"model": {"w": torch.ones(1)}, "epoch": 2}, tmp_path / "state.pth")
    assert torch.load(path, weights_only=True)["epoch"] == 2


class _Exploit:
    """Unpickling this would create a file: the loader must refuse it without running anything."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def test_refuses_pickles_that_need_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "payload": _Exploit(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth") as err:
        read_state_dict(path)
    assert "refusing to unpickle" in str(err.value)
    assert not marker.exists()


def test_refuses_namespace_args(tmp_path: Path) -> None:
    path = tmp_path / "args.pt"
    torch.save({"model": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"args\.pt"):
        read_state_dict(path)


def test_format_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        read_state_dict(tmp_path / "nope.pth")
    bad_suffix = tmp_path / "w.npz"
    bad_suffix.write_bytes(b"x")
    with pytest.raises(CheckpointFormatError, match=r"w\.npz.*unsupported checkpoint suffix"):
        read_state_dict(bad_suffix)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointFormatError, match=r"list\.pt: expected a state dict"):
        read_state_dict(tmp_path / "list.pt")
    torch.save({"model": {"w": torch.ones(1), "step": 3}}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointFormatError, match=r"mixed\.pt: not a state dict.*step"):
        read_state_dict(tmp_path / "mixed.pt")


def test_unwrap_strips_ddp_prefix() -> None:
    sd = unwrap_state_dict({"model": {"module.a": torch.ones(1), "module.b.c": torch.zeros(1)}})
    assert list(sd) == ["a", "b.c"]
