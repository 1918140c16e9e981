"""Strict loading: undocumented keys are errors that list them; documented ones are reported, not dropped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from albef.checkpoint import CheckpointMismatchError, load_state_dict_strict, tie_groups
from albef.models import create_model, model_preset


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))


def toy_state() -> dict[str, torch.Tensor]:
    return {k: torch.randn_like(v) if v.is_floating_point() else v + 5 for k, v in Toy().state_dict().items()}


def test_exact_load_reports_everything_loaded() -> None:
    model, state = Toy(), toy_state()
    report = load_state_dict_strict(model, state)
    assert report.loaded == list(model.state_dict()) and report.missing == [] and report.unexpected == []
    assert torch.equal(model.enc.weight, state["enc.weight"]) and int(model.ptr) == 5


def test_missing_and_unexpected_keys_are_listed() -> None:
    state = toy_state()
    del state["head.weight"], state["head.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as err:
        load_state_dict_strict(Toy(), state, context="toy.pth does not fit")
    message = str(err.value)
    assert message.startswith("toy.pth does not fit:")
    assert "missing keys (2):" in message and "head.weight" in message and "head.bias" in message
    assert "unexpected keys (1):" in message and "extra.weight" in message
    assert err.value.missing == ["head.weight", "head.bias"] and err.value.unexpected == ["extra.weight"]


def test_documented_keys_are_reported_not_dropped() -> None:
    model, state = Toy(), toy_state()
    before = model.head.weight.detach().clone()
    del state["head.weight"], state["head.bias"]
    state["mlm_head.bias"] = torch.zeros(1)
    report = load_state_dict_strict(
        model, state, expected_missing=("head.*",), expected_unexpected=("mlm_head.bias",)
    )
    assert report.missing == ["head.weight", "head.bias"]
    assert report.unexpected == ["mlm_head.bias"]
    assert report.loaded == ["ptr", "enc.weight", "enc.bias"]  # in the model's order
    assert torch.equal(model.head.weight, before)  # missing keys keep their values


def test_shape_mismatch_names_key_and_both_shapes_and_loads_nothing() -> None:
    model, state = Toy(), toy_state()
    before = model.enc.weight.detach().clone()
    state["head.weight"] = torch.zeros(3, 4)
    with pytest.raises(CheckpointMismatchError, match=r"head\.weight: checkpoint \(3, 4\) vs model \(2, 4\)"):
        load_state_dict_strict(model, state)
    assert torch.equal(model.enc.weight, before)


def test_float_into_integer_buffer_is_refused() -> None:
    state = toy_state()
    state["ptr"] = torch.zeros(1)
    with pytest.raises(
        CheckpointMismatchError, match=r"ptr: checkpoint dtype torch.float32 vs model torch.int64"
    ):
        load_state_dict_strict(Toy(), state)


def test_tied_tensors_must_agree() -> None:
    model = create_model("pretrain", model_preset("albef_tiny"))
    groups = tie_groups(model)
    assert ["text_encoder.embeddings.word_embeddings.weight", "mlm_head.decoder.weight"] in groups
    assert ["mlm_head.bias", "mlm_head.decoder.bias"] in groups
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["mlm_head.decoder.weight"] += 1
    with pytest.raises(
        CheckpointMismatchError, match=r"mlm_head\.decoder\.weight are one tensor in the model"
    ):
        load_state_dict_strict(model, state)


def test_nlvr_shared_key_value_are_tie_groups() -> None:
    model = create_model("nlvr", model_preset("albef_tiny"))
    groups = tie_groups(model)
    assert [
        "text_encoder.encoder.layer.6.crossattention.self.key.weight",
        "text_encoder.encoder.layer.7.crossattention.self.key.weight",
    ] in groups
    assert (
        len([g for g in groups if g[0].startswith("text_encoder.")]) == 6 * 4
    )  # key/value weight/bias x 6 pairs
