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


def test_extra_pairs_join_the_itm_loss_with_their_labels(
    model: ALBEFPretrain, tokenizer: TextTokenizer
) -> None:
    """The ITM loss with extra pairs is the cross-entropy over the positives, the in-batch negatives and
    (caption n, image rows[n]) labelled labels[n], all labelled by hand; without them the loss is the official
    one."""
    from albef.losses.itm import NegativeSamples
    from albef.models.albef import TextEncoding
    from albef.tasks.contrastive import ExtraPairs, itm_with_negatives

    model.eval()  # no dropout: the same forward twice gives the same logits
    torch.manual_seed(0)
    batch = ImageTextBatch(images(len(CAPTIONS)), tokenizer.encode(CAPTIONS))
    extra_texts = [
        "a blue square next to a red circle",  # false of image 0
        "three green stars and one yellow triangle",  # false of image 3
        "a red square next to a blue circle",  # the true caption the first was made from
    ]
    extra = tokenizer.encode(extra_texts)
    rows, labels = torch.tensor([0, 3, 0]), torch.tensor([0, 0, 1])
    negatives = NegativeSamples(torch.tensor([1, 2, 3, 0]), torch.tensor([2, 3, 0, 1]))
    image = model.encode_image(batch.image)
    text = model.encode_text(batch.text.input_ids, batch.text.attention_mask)
    fused = model.fuse(text, image.embeds)
    with_extra = itm_with_negatives(model, image, text, negatives, fused, ExtraPairs(extra, rows, labels))
    official = itm_with_negatives(model, image, text, negatives, fused)
    pos = model.itm_logits(fused)
    neg_txt = text.states[negatives.text_for_image], text.mask[negatives.text_for_image]
    in_batch = model.itm_logits(
        model.fuse(
            TextEncoding(torch.cat([text.states, neg_txt[0]]), torch.cat([text.mask, neg_txt[1]]), text.feat),
            torch.cat([image.embeds[negatives.image_for_text], image.embeds]),
        )
    )
    one_by_one = []
    for caption, row in zip(extra_texts, rows.tolist(), strict=True):
        tokens = tokenizer.encode([caption])
        alone = model.encode_text(tokens.input_ids, tokens.attention_mask)
        one_by_one.append(model.itm_logits(model.fuse(alone, image.embeds[row : row + 1])))
    logits = torch.cat([pos, in_batch, *one_by_one])
    hand = torch.tensor([1] * 4 + [0] * 8 + [0, 0, 1])
    assert with_extra.item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, hand).item(), rel=1e-4
    )
    expected = torch.nn.functional.cross_entropy(torch.cat([pos, in_batch]), hand[:12])
    assert official.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(with_extra.item() - official.item()) > 1e-4


def test_pretraining_samples_carry_a_false_caption_drawn_after_the_caption(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from PIL import Image

    from albef.data.collate import CaptionCollator, TextPolicy
    from albef.data.datasets import PretrainDataset
    from albef.data.formats import read_negative_captions
    from albef.data.records import FalseCaption, PretrainRecord
    from albef.data.transforms import build_test_transform

    Image.new("RGB", (16, 16), "red").save(tmp_path / "a.png")
    Image.new("RGB", (16, 16), "blue").save(tmp_path / "b.png")
    Image.new("RGB", (16, 16), "green").save(tmp_path / "c.png")
    pair = {"caption": "A red square.", "negative": "A blue square."}
    (tmp_path / "neg.json").write_text(json.dumps({"a.png": [pair, "Two circles."], "c.png": [pair]}))
    negatives = read_negative_captions(tmp_path / "neg.json")
    assert negatives["a.png"] == (
        FalseCaption("A blue square.", "A red square."),
        FalseCaption("Two circles."),
    )
    records = [
        PretrainRecord("a.png", ("a red square", "one square", "a square")),
        PretrainRecord("b.png", ("x",)),
        PretrainRecord("c.png", ("one square",)),
    ]
    kwargs = {"source": "t.json", "seed": 3}
    plain = PretrainDataset(records, tmp_path, build_test_transform(16), **kwargs)
    extra = PretrainDataset(records, tmp_path, build_test_transform(16), negatives=negatives, **kwargs)
    for epoch in range(3):
        plain.set_epoch(epoch), extra.set_epoch(epoch)
        assert [s.caption for s in map(plain.__getitem__, (0, 1))] == [
            s.caption for s in map(extra.__getitem__, (0, 1))
        ]
    drawn = {
        (extra[0].negative, extra[0].negative_source) for epoch in range(8) if not extra.set_epoch(epoch)
    }
    assert drawn == {("a blue square", "a red square"), ("two circles", None)}
    assert extra[1].negative is None and plain[0].negative is None and plain[0].negative_source is None
    tokenizer_dir = train_wordpiece(
        ["a red square one blue two circles x"] * 2, tmp_path / "vocab", vocab_size=200
    )
    tokenizer = load_tokenizer(tokenizer_dir)
    collate = CaptionCollator(tokenizer, TextPolicy(max_length=30))
    batch = collate([extra[1], extra[2]])  # image c: its pair (the false caption first, then the true one)
    assert batch.extra_rows is not None and batch.extra_rows.tolist() == [1, 1]
    assert batch.extra_labels is not None and batch.extra_labels.tolist() == [0, 1]
    assert batch.extra_text is not None
    assert torch.equal(
        batch.extra_text.input_ids, tokenizer.encode(["a blue square", "a red square"]).input_ids
    )
    assert collate([plain[0], plain[1]]).extra_text is None
    for bad, where in (
        ({"a.png": "A blue square."}, r"a\.png.*list"),
        ({"a.png": [" "]}, r"a\.png\[0\].*non-blank"),
        ({"a.png": ["x", {"negative": "A blue square."}]}, r"a\.png\[1\]\.caption.*missing"),
    ):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        from albef.data.errors import DataError

        with pytest.raises(DataError, match=rf"bad\.json.*{where}"):
            read_negative_captions(tmp_path / "bad.json")


def test_false_captions_are_a_pretraining_option_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    from albef.config import load_config
    from albef.errors import ConfigError
    from albef.tasks import get_task
    from tests.engine import small_world

    world = small_world(tmp_path_factory)
    tokenizer = load_tokenizer(world / "tokenizer")
    sets = [
        f"data.root={world}",
        "data.synthetic_size=small",
        "data.itm_text_negatives=pretrain_negatives.json",
    ]
    pretrain = get_task("pretrain")(load_config("synthetic_pretrain", sets), tokenizer)
    assert len(pretrain.train_dataset()) == 48  # reads the world's pretrain_negatives.json
    with pytest.raises(ConfigError, match="task 'retrieval' does not use it"):
        get_task("retrieval")(load_config("synthetic_retrieval", sets), tokenizer)
