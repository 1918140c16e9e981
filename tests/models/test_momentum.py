"""EMA teachers (copy, update rule, tied decoder) and the feature queue."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from albef.models import create_model, model_preset
from albef.models.momentum import FeatureQueue
from tests.models import tiny_model

TEACHER_TASKS = ("pretrain", "retrieval", "vqa", "nlvr", "ve")


def _pairs(model: nn.Module) -> list[tuple[str, Tensor, Tensor]]:
    """(name, online, teacher) for every parameter of every momentum pair, teacher names checked."""
    pairs = []
    for module in model.momentum_names:
        online = dict(getattr(model, module).named_parameters())
        teacher = dict(getattr(model, module + "_m").named_parameters())
        assert list(online) == list(teacher), module
        pairs += [(f"{module}.{k}", online[k], teacher[k]) for k in online]
    return pairs


@pytest.mark.parametrize("task", TEACHER_TASKS)
def test_copy_params_makes_teacher_equal_online(task: str) -> None:
    model = tiny_model(task)
    with torch.no_grad():
        for _, _, p_m in _pairs(model):
            p_m.add_(1.0)
    model.copy_params()
    for name, p, p_m in _pairs(model):
        assert p_m is not p, name
        assert torch.equal(p_m, p), name
        assert not p_m.requires_grad, name


def test_update_momentum_hand_set() -> None:
    model = tiny_model("retrieval")
    model.momentum = 0.75
    with torch.no_grad():
        for _, p, p_m in _pairs(model):
            p.fill_(3.0)
            p_m.fill_(-1.0)
    model.update_momentum()
    for name, p, p_m in _pairs(model):
        assert torch.equal(p_m, torch.full_like(p_m, 0.75 * -1.0 + 0.25 * 3.0)), name  # 0.0 exactly
        assert torch.equal(p, torch.full_like(p, 3.0)), name


@pytest.mark.parametrize("task", TEACHER_TASKS)
def test_update_momentum_is_the_ema_rule(task: str) -> None:
    model = tiny_model(task)
    m = model.momentum
    with torch.no_grad():
        for _, _, p_m in _pairs(model):
            p_m.add_(torch.randn_like(p_m))
    expected = {name: p_m * m + p * (1 - m) for name, p, p_m in _pairs(model)}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    model.update_momentum()
    for name, _, p_m in _pairs(model):
        torch.testing.assert_close(p_m, expected[name], atol=0, rtol=0, msg=name)
        assert not p_m.requires_grad
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), f"{name}: the EMA must not touch buffers"


@pytest.mark.parametrize(
    ("task", "head", "decoder_stack"),
    [("pretrain", "mlm_head", "text_encoder"), ("vqa", "lm_head", "text_decoder")],
)
def test_teacher_decoder_is_tied_and_updated_once(task: str, head: str, decoder_stack: str) -> None:
    model = tiny_model(task)
    online_emb = getattr(model, decoder_stack).embeddings.word_embeddings.weight
    teacher_emb = getattr(model, decoder_stack + "_m").embeddings.word_embeddings.weight
    teacher_decoder = getattr(model, head + "_m").decoder
    assert teacher_decoder.weight is teacher_emb
    assert getattr(model, head).decoder.weight is online_emb
    assert teacher_emb is not online_emb

    model.copy_params()
    model.momentum = 0.5
    with torch.no_grad():
        online_emb.fill_(3.0)
        teacher_emb.fill_(1.0)
    model.update_momentum()
    assert teacher_decoder.weight is teacher_emb
    # Once: 0.5 * 1 + 0.5 * 3 = 2; an update through both names would give 0.5 * 2 + 0.5 * 3 = 2.5.
    assert torch.equal(teacher_emb, torch.full_like(teacher_emb, 2.0))
    assert not teacher_emb.requires_grad


def test_models_without_distill_have_no_teachers() -> None:
    cfg = dataclasses.replace(model_preset("albef_tiny"), distill=False)
    for task in ("vqa", "nlvr", "ve"):
        model = create_model(task, cfg)
        assert not [n for n, _ in model.named_parameters() if n.split(".")[0].endswith("_m")], task
        model.copy_params()
        model.update_momentum()  # no-ops


# -- FeatureQueue ---------------------------------------------------------------------------------------------
def _feats(batch: int, dim: int = 4, seed: int = 0) -> Tensor:
    return F.normalize(torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_queue_starts_with_unit_columns_and_no_ids() -> None:
    queue = FeatureQueue(dim=4, size=8, with_idx=True)
    torch.testing.assert_close(queue.image_queue.norm(dim=0), torch.ones(8))
    torch.testing.assert_close(queue.text_queue.norm(dim=0), torch.ones(8))
    assert torch.equal(queue.idx_queue, torch.full((1, 8), -100))
    assert int(queue.queue_ptr) == 0


def test_enqueue_writes_at_the_pointer_and_wraps() -> None:
    queue = FeatureQueue(dim=4, size=8, with_idx=True)
    queue.queue_ptr[0] = 4
    start_image, start_text = queue.image_queue.clone(), queue.text_queue.clone()
    img, txt = _feats(4, seed=1), _feats(4, seed=2)
    queue.enqueue(img, txt, idx=torch.tensor([7, 8, 9, 10]))
    assert torch.equal(queue.image_queue[:, 4:], img.T) and torch.equal(queue.text_queue[:, 4:], txt.T)
    assert torch.equal(queue.image_queue[:, :4], start_image[:, :4])
    assert torch.equal(queue.text_queue[:, :4], start_text[:, :4])
    assert queue.idx_queue.tolist() == [[-100] * 4 + [7, 8, 9, 10]]
    assert int(queue.queue_ptr) == 0  # wrapped

    img2, txt2 = _feats(4, seed=3), _feats(4, seed=4)
    queue.enqueue(img2, txt2, idx=torch.tensor([1, 2, 3, 4]))
    assert torch.equal(queue.image_queue[:, :4], img2.T) and torch.equal(queue.text_queue[:, :4], txt2.T)
    assert torch.equal(queue.image_queue[:, 4:], img.T)
    assert queue.idx_queue.tolist() == [[1, 2, 3, 4, 7, 8, 9, 10]]
    assert int(queue.queue_ptr) == 4


def test_queue_without_ids() -> None:
    queue = FeatureQueue(dim=4, size=4)
    assert not hasattr(queue, "idx_queue")
    queue.enqueue(_feats(2), _feats(2, seed=1))
    assert int(queue.queue_ptr) == 2


def test_queue_with_ids_needs_ids() -> None:
    queue = FeatureQueue(dim=4, size=8, with_idx=True)
    with pytest.raises(ValueError, match="pass idx"):
        queue.enqueue(_feats(4), _feats(4))


@pytest.mark.parametrize("batch", [3, 5, 0])
def test_batch_that_does_not_divide_the_queue_is_a_clear_error(batch: int) -> None:
    queue = FeatureQueue(dim=4, size=8)
    with pytest.raises(
        ValueError, match=rf"queue_size 8 must be a multiple of the global batch size {batch}"
    ):
        queue.check_batch(batch)
    if batch:
        with pytest.raises(ValueError, match="multiple of the global batch size"):
            queue.enqueue(_feats(batch), _feats(batch))
        assert int(queue.queue_ptr) == 0


def test_check_batch_accepts_divisors() -> None:
    queue = FeatureQueue(dim=4, size=8)
    for batch in (1, 2, 4, 8):
        queue.check_batch(batch)
