"""The pretraining objective on the tiny model and a tiny batch: losses, queue, temperature and teachers."""

from __future__ import annotations

import pytest
import torch

from albef.data.collate import ImageTextBatch
from albef.data.tokenizer import TextTokenizer, load_tokenizer
from albef.data.wordpiece import train_wordpiece
from albef.losses.itm import sample_negatives, sample_negatives_in_order
from albef.models.albef import ALBEFPretrain
from albef.models.momentum import parameter_pairs
from albef.tasks.pretrain import PretrainObjective
from tests.models import images, tiny_model

CAPTIONS = [
    "a red square next to a blue circle",
    "two green triangles on a white table",
    "a small blue circle above a large red square",
    "three yellow stars and one green triangle",
]
ALPHA = 0.4


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    """A WordPiece vocabulary learnt from the captions, filled up to the tiny model's 1000 ids."""
    out = train_wordpiece(CAPTIONS * 2, tmp_path_factory.mktemp("vocab"), vocab_size=1000)
    return load_tokenizer(out)


@pytest.fixture
def model() -> ALBEFPretrain:
    return tiny_model("pretrain")  # type: ignore[return-value]


@pytest.fixture
def batch(tokenizer: TextTokenizer) -> ImageTextBatch:
    return ImageTextBatch(images(len(CAPTIONS)), tokenizer.encode(CAPTIONS))


def test_losses_are_finite_scalars(
    model: ALBEFPretrain, batch: ImageTextBatch, tokenizer: TextTokenizer
) -> None:
    torch.manual_seed(0)
    out = PretrainObjective(tokenizer)(model, batch, ALPHA)
    assert set(out) == {"itc_loss", "itm_loss", "mlm_loss", "temp"}
    for name in ("itc_loss", "itm_loss", "mlm_loss"):
        assert out[name].shape == () and torch.isfinite(out[name]), name
        assert out[name].item() > 0, name


def test_queue_receives_the_teacher_features_and_the_pointer_advances(
    model: ALBEFPretrain, batch: ImageTextBatch, tokenizer: TextTokenizer
) -> None:
    queue = model.queue
    queue.queue_ptr.fill_(60)  # the batch is written into columns 60-63, then the pointer wraps
    PretrainObjective(tokenizer)(model, batch, ALPHA)
    assert queue.queue_ptr.item() == 0
    PretrainObjective(tokenizer)(model, batch, ALPHA)
    assert queue.queue_ptr.item() == len(CAPTIONS)
    # The teachers were updated before they encoded the batch, so re-encoding now gives the queued features.
    with torch.no_grad():
        image_m = model.encode_image_m(batch.image).feat
        text_m = model.encode_text_m(batch.text.input_ids, batch.text.attention_mask).feat
    assert torch.allclose(queue.image_queue[:, :4].T, image_m, atol=1e-6)
    assert torch.allclose(queue.text_queue[:, :4].T, text_m, atol=1e-6)


@pytest.mark.parametrize(("start", "clamped"), [(1.0, 0.5), (1e-5, 0.001), (0.2, 0.2)])
def test_temperature_is_clamped(
    model: ALBEFPretrain, batch: ImageTextBatch, tokenizer: TextTokenizer, start: float, clamped: float
) -> None:
    with torch.no_grad():
        model.temp.fill_(start)
    out = PretrainObjective(tokenizer)(model, batch, ALPHA)
    assert model.temp.item() == pytest.approx(clamped)
    assert out["temp"].item() == pytest.approx(clamped)


def test_teachers_take_one_ema_step(
    model: ALBEFPretrain, batch: ImageTextBatch, tokenizer: TextTokenizer
) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # teachers equal to the online model would make the EMA step invisible
        for _, p_m in parameter_pairs(model, model.momentum_names):
            p_m.add_(0.01 * torch.randn(p_m.shape, generator=gen))
    pairs = list(parameter_pairs(model, model.momentum_names))
    expected = [0.995 * p_m.clone() + 0.005 * p.detach().clone() for p, p_m in pairs]
    PretrainObjective(tokenizer)(model, batch, ALPHA)
    for (_, p_m), want in zip(pairs, expected, strict=True):
        assert torch.allclose(p_m, want, atol=1e-7)


def test_gradients_reach_the_online_model_only(
    model: ALBEFPretrain, batch: ImageTextBatch, tokenizer: TextTokenizer
) -> None:
    out = PretrainObjective(tokenizer)(model, batch, ALPHA)
    (out["itc_loss"] + out["itm_loss"] + out["mlm_loss"]).backward()
    assert model.temp.grad is not None and torch.isfinite(model.temp.grad)
    for name in ("vision_proj", "text_proj", "itm_head", "mlm_head"):
        assert all(p.grad is not None for p in getattr(model, name).parameters()), name
    for _, p_m in parameter_pairs(model, model.momentum_names):
        assert p_m.grad is None


def test_parity_mode_and_the_same_seed_repeat_the_losses(
    batch: ImageTextBatch, tokenizer: TextTokenizer
) -> None:
    results = []
    for parity in (False, True, True):
        model = tiny_model("pretrain")
        torch.manual_seed(7)
        sample = sample_negatives_in_order if parity else sample_negatives
        out = PretrainObjective(tokenizer, sample=sample)(model, batch, ALPHA)
        results.append(torch.stack([out["itc_loss"], out["itm_loss"], out["mlm_loss"]]))
    assert torch.isfinite(results[0]).all()
    assert torch.equal(results[1], results[2])
    assert torch.equal(results[0][0], results[1][0])  # ITC does not depend on the draws


def test_objective_takes_the_special_ids_from_the_tokenizer(
    batch: ImageTextBatch, tokenizer: TextTokenizer
) -> None:
    objective = PretrainObjective(tokenizer)
    assert (objective.pad_id, objective.cls_id, objective.mask_id) == (
        tokenizer.pad_token_id,
        tokenizer.cls_token_id,
        tokenizer.mask_token_id,
    )
    assert objective.vocab_size == tokenizer.vocab_size == 1000
    assert (batch.text.input_ids[:, 0] == tokenizer.cls_token_id).all()
