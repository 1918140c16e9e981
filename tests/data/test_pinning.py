"""The DataLoader's ``pin_memory=True`` pins our batch types (it calls ``pin_memory()`` on each batch)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.utils.data._utils.pin_memory import pin_memory

from albef.data.collate import RetrievalBatch
from albef.data.tokenizer import TokenBatch

PINNED: set[int] = set()


def _pinned(tensor: Tensor) -> bool:
    return tensor.is_pinned() if torch.cuda.is_available() else id(tensor) in PINNED


@pytest.fixture
def pinning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a GPU, page-locked memory cannot be had: torch's own ``Tensor.pin_memory`` is replaced by a
    copy that is remembered as pinned (on a GPU machine the real one runs)."""
    if torch.cuda.is_available():
        return

    def fake_pin(tensor: Tensor) -> Tensor:
        copy = tensor.clone()
        PINNED.add(id(copy))
        return copy

    monkeypatch.setattr(Tensor, "pin_memory", fake_pin)


def test_the_loader_pin_step_pins_every_tensor_of_a_batch(pinning: None) -> None:
    text = TokenBatch(torch.tensor([[101, 7, 102]]), torch.tensor([[1, 1, 1]]))
    batch = RetrievalBatch(image=torch.rand(1, 3, 4, 4), text=text, idx=torch.tensor([5]))
    pinned = pin_memory(batch)  # what the DataLoader's pin thread does with each batch
    assert type(pinned) is RetrievalBatch and type(pinned.text) is TokenBatch
    tensors = (pinned.image, pinned.text.input_ids, pinned.text.attention_mask, pinned.idx)
    assert all(_pinned(t) for t in tensors)
    assert torch.equal(pinned.image, batch.image) and torch.equal(pinned.idx, batch.idx)
    assert torch.equal(pinned.text.input_ids, text.input_ids)
    assert not _pinned(batch.image)  # a copy; the batch itself is left as it was
