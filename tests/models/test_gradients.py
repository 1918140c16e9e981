"""One training step per task model: every online parameter gets a finite non-zero gradient, no teacher does.

Each loss below touches every online output path of its model (and runs the EMA teachers where the model
has them, as the official training forwards do), so a parameter left out of the graph shows up as missing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.models import CLS, PAD, SEP, TASKS, images, texts, tiny_model

BATCH = 4  # divides the tiny queue size (64)

TA_NO_GRAD = {"vision_proj.weight", "vision_proj.bias", "text_proj.weight", "text_proj.bias", "temp"}
"""The text-assignment model keeps projections and ``temp`` only for its no-grad image-pair sampling."""


def _soft_ce(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Cross-entropy against the teacher's softmax (the distillation term)."""
    return -(teacher_logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()


def _itc_itm(
    model: nn.Module, image: Tensor, ids: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """ITC (batch + teacher soft targets) and ITM (positives + shifted negatives), then image tokens.

    Returns:
        ITC loss, ITM loss, online image tokens, teacher image tokens.
    """
    model.update_momentum()
    img, txt = model.encode_image(image), model.encode_text(ids, mask)
    img_m, txt_m = model.encode_image_m(image), model.encode_text_m(ids, mask)
    sim_i2t, sim_t2i = model.similarity(img.feat, txt.feat)
    with torch.no_grad():
        sim_i2t_m, sim_t2i_m = model.similarity(img_m.feat, txt_m.feat)
    targets = torch.arange(image.shape[0])
    itc = (F.cross_entropy(sim_i2t, targets) + F.cross_entropy(sim_t2i, targets)) / 2
    itc = itc + (_soft_ce(sim_i2t, sim_i2t_m) + _soft_ce(sim_t2i, sim_t2i_m)) / 2
    fused = torch.cat([model.fuse(txt, img.embeds), model.fuse(txt, img.embeds.roll(1, dims=0))])
    labels = torch.cat([torch.ones(image.shape[0]), torch.zeros(image.shape[0])]).long()
    itm = F.cross_entropy(model.itm_logits(fused), labels)
    return itc, itm, img.embeds, img_m.embeds


def pretrain_loss(model: nn.Module) -> Tensor:
    image, (ids, mask) = images(BATCH), texts([12, 9, 7, 12])
    itc, itm, image_embeds, image_embeds_m = _itc_itm(model, image, ids, mask)
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[:, 2::3] = True
    masked &= mask.bool()
    mlm_ids = ids.masked_fill(masked, 103)
    labels = ids.masked_fill(~masked, -100)
    logits = model.mlm_logits(mlm_ids, mask, image_embeds)
    teacher = model.mlm_logits_m(mlm_ids, mask, image_embeds_m)
    mlm = F.cross_entropy(logits.transpose(1, 2), labels) + _soft_ce(logits[masked], teacher[masked])
    model.queue.enqueue(
        F.normalize(torch.randn(BATCH, 16), dim=-1), F.normalize(torch.randn(BATCH, 16), dim=-1)
    )
    return itc + itm + mlm


def retrieval_loss(model: nn.Module) -> Tensor:
    image, (ids, mask) = images(BATCH), texts([10, 6, 10, 8])
    itc, itm, _, _ = _itc_itm(model, image, ids, mask)
    feat = F.normalize(torch.randn(BATCH, 16), dim=-1)
    model.queue.enqueue(feat, feat, idx=torch.arange(BATCH))
    return itc + itm


def _answers(counts: list[int]) -> tuple[Tensor, Tensor]:
    """``[CLS] word [word] [SEP] [PAD]`` answers, ``sum(counts)`` of them."""
    lengths = [3 + (i % 2) for i in range(sum(counts))]
    ids, mask = texts(lengths, pad_to=5, seed=7)
    ids[torch.arange(len(lengths)), torch.tensor(lengths) - 1] = SEP
    return ids, mask


def vqa_loss(model: nn.Module) -> Tensor:
    counts = [2, 1, 3]
    image, (q_ids, q_mask) = images(3), texts([9, 6, 8])
    model.update_momentum()
    states = model.encode_question(image, q_ids, q_mask)
    a_ids, a_mask = _answers(counts)
    repeat = torch.tensor(counts)
    nll = model.answer_nll(
        a_ids, a_mask, states.repeat_interleave(repeat, 0), q_mask.repeat_interleave(repeat, 0), PAD
    )
    return nll.mean()


def nlvr_loss(model: nn.Module) -> Tensor:
    image0, image1, (ids, mask) = images(3, seed=1), images(3, seed=2), texts([10, 7, 5])
    model.update_momentum()
    logits = model.logits(image0, image1, ids, mask)
    return F.cross_entropy(logits, torch.tensor([0, 1, 1])) + _soft_ce(
        logits, model.logits_m(image0, image1, ids, mask)
    )


def text_assignment_loss(model: nn.Module) -> Tensor:
    image0, image1, (ids, mask) = images(3, seed=1), images(3, seed=2), texts([10, 7, 5])
    first, second = model.visual_encoder(torch.cat([image0, image1])).split(3)
    return F.cross_entropy(model.logits(first, second, ids, mask), torch.tensor([0, 1, 2]))


def ve_loss(model: nn.Module) -> Tensor:
    image, (ids, mask) = images(3), texts([6, 4, 5])
    model.update_momentum()
    logits = model.logits(image, ids, mask)
    return F.cross_entropy(logits, torch.tensor([0, 1, 2])) + _soft_ce(
        logits, model.logits_m(image, ids, mask)
    )


LOSSES: dict[str, Callable[[nn.Module], Tensor]] = {
    "pretrain": pretrain_loss,
    "retrieval": retrieval_loss,
    "vqa": vqa_loss,
    "nlvr": nlvr_loss,
    "nlvr_pretrain": text_assignment_loss,
    "ve": ve_loss,
}


def _check_key_bias_grads(model: nn.Module) -> None:
    """Attention key biases shift every score of a query row by one constant, which softmax ignores.

    Their exact gradient is therefore 0 (official BERT/ViT alike); what autograd returns is float rounding,
    orders of magnitude below the gradient of the matching query bias. The non-zero check above passes on
    that rounding alone, so the key biases are also checked for being negligible.
    """
    for module in model.modules():
        key, query = getattr(module, "key", None), getattr(module, "query", None)
        if isinstance(key, nn.Linear) and isinstance(query, nn.Linear) and query.bias.grad is not None:
            assert key.bias.grad.abs().max() <= 1e-3 * query.bias.grad.abs().max()


def _is_teacher(name: str) -> bool:
    return name.split(".", 1)[0].endswith("_m")


def test_every_task_has_a_loss() -> None:
    assert set(LOSSES) == set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_training_step_reaches_every_online_parameter_and_no_teacher(task: str) -> None:
    model = tiny_model(task).train()
    params = dict(model.named_parameters())
    online = {n: p for n, p in params.items() if not _is_teacher(n)}
    teacher = {n: p for n, p in params.items() if _is_teacher(n)}
    assert bool(teacher) == (task != "nlvr_pretrain")  # TA pretraining has no EMA teachers

    loss = LOSSES[task](model)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()

    no_grad = {n for n, p in online.items() if p.grad is None}
    assert no_grad == (TA_NO_GRAD if task == "nlvr_pretrain" else set())
    for name, p in online.items():
        assert p.requires_grad, name
        if name not in no_grad:
            assert torch.isfinite(p.grad).all(), name
            assert (p.grad != 0).any(), name
    _check_key_bias_grads(model)
    for name, p in teacher.items():
        assert not p.requires_grad and p.grad is None, name

    # The step: the optimiser sees exactly the online parameters, and the teachers stay as they were.
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in online.values()}
    before = {n: p.detach().clone() for n, p in params.items()}
    torch.optim.SGD(trainable, lr=0.1).step()
    for name, p in params.items():
        grad = online[name].grad if name in online else None
        expected = before[name] if grad is None else before[name].add(grad, alpha=-0.1)
        assert torch.equal(p, expected), name


@pytest.mark.parametrize("task", ["pretrain", "retrieval"])
def test_queues_are_buffers_not_parameters(task: str) -> None:
    model = tiny_model(task)
    expected = {"queue.image_queue", "queue.text_queue", "queue.queue_ptr"}
    if task == "retrieval":
        expected.add("queue.idx_queue")
    buffers = {n for n, _ in model.named_buffers()}
    assert expected <= buffers
    assert not expected & {n for n, _ in model.named_parameters()}
    assert expected <= set(model.state_dict())
    assert not any(b.requires_grad for b in model.buffers())


def test_pretrain_head_is_tied_and_cls_id_is_the_text_start() -> None:
    model = tiny_model("pretrain")
    assert model.mlm_head.decoder.weight is model.text_encoder.embeddings.word_embeddings.weight
    ids, _ = texts([5])
    assert int(ids[0, 0]) == CLS
