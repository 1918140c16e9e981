"""The two-image encoder of NLVR² and text assignment: cross-attention key/value shared in layer pairs."""

from __future__ import annotations

import pytest
import torch

from albef.models.bert import BertStack
from albef.models.builders import model_preset
from albef.models.classify import share_cross_attention_kv
from tests.models import texts, tiny_model

FUSION = 6  # albef_tiny: layers 0-5 text, 6-17 fusion in the two-image encoder


def _cross(stack: BertStack, layer: int) -> torch.nn.Module:
    block = stack.encoder.layer[layer].crossattention
    assert block is not None
    return block


@pytest.mark.parametrize("task", ["nlvr", "nlvr_pretrain"])
def test_key_value_shared_in_pairs(task: str) -> None:
    stack = tiny_model(task).text_encoder
    assert stack.num_layers == 18 and stack.fusion_layer == FUSION
    for first in range(FUSION, 18, 2):
        a, b = _cross(stack, first).self, _cross(stack, first + 1).self
        for name in ("key", "value"):
            assert getattr(a, name).weight is getattr(b, name).weight, (first, name)
            assert getattr(a, name).bias is getattr(b, name).bias, (first, name)
        assert a.query.weight is not b.query.weight
        assert _cross(stack, first).output.dense.weight is not _cross(stack, first + 1).output.dense.weight
        if first + 2 < 18:  # pairs are distinct from each other
            assert a.key.weight is not _cross(stack, first + 2).self.key.weight


def test_state_dict_keeps_both_names_of_a_shared_tensor() -> None:
    model = tiny_model("nlvr")
    state = model.state_dict()
    for first in range(FUSION, 18, 2):
        for part in ("key.weight", "key.bias", "value.weight", "value.bias"):
            a = f"text_encoder.encoder.layer.{first}.crossattention.self.{part}"
            b = f"text_encoder.encoder.layer.{first + 1}.crossattention.self.{part}"
            assert a in state and b in state
            assert torch.equal(state[a], state[b])
    # Strict loading of the full dict round-trips.
    fresh = tiny_model("nlvr", seed=1)
    fresh.load_state_dict(state, strict=True)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_teacher_shares_its_own_pairs_not_the_students() -> None:
    model = tiny_model("nlvr")
    online, teacher = model.text_encoder, model.text_encoder_m
    t6, t7 = _cross(teacher, FUSION).self, _cross(teacher, FUSION + 1).self
    assert t6.key.weight is t7.key.weight and t6.value.weight is t7.value.weight
    assert t6.key.weight is not _cross(online, FUSION).self.key.weight


def _shared_grads(ctx0: torch.Tensor, ctx1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grads of the first pair's shared key/value weights from a loss on the two-image encoder."""
    stack = tiny_model("nlvr").text_encoder.train(False)
    ids, mask = texts([9, 6, 4], seed=1)
    hidden = stack.forward_multimodal(ids, mask, [ctx0, ctx1])
    (hidden**2).mean().backward()
    shared = _cross(stack, FUSION).self
    return shared.key.weight.grad, shared.value.weight.grad


def test_gradient_reaches_the_shared_tensor_from_each_image() -> None:
    """A zero context contributes nothing to dW of its layer (dW = grad_out^T @ input), isolating the other."""
    gen = torch.Generator().manual_seed(2)
    image0, image1 = torch.randn(3, 10, 32, generator=gen), torch.randn(3, 10, 32, generator=gen)
    zeros = torch.zeros(3, 10, 32)

    key_zero, value_zero = _shared_grads(zeros, zeros)  # control: neither layer can contribute
    assert not key_zero.any() and not value_zero.any()
    for ctx0, ctx1 in ((image0, zeros), (zeros, image1), (image0, image1)):
        key, value = _shared_grads(ctx0, ctx1)
        assert key.abs().sum() > 0 and value.abs().sum() > 0
        assert torch.isfinite(key).all() and torch.isfinite(value).all()


def test_an_odd_number_of_fusion_layers_cannot_be_paired() -> None:
    stack = BertStack(model_preset("albef_tiny").text, num_layers=9)
    with pytest.raises(ValueError, match="even number of fusion layers, got 3"):
        share_cross_attention_kv(stack)
