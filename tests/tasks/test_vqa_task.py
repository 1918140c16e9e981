"""VQA finetuning: the loss on hand-computed values, the objective on the tiny model (weights, questions as
the normaliser, distillation, EMA, gradients), the task's data, and ``albef finetune vqa`` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from albef.cli.main import main
from albef.config import load_config
from albef.data.collate import VQABatch
from albef.data.tokenizer import TokenBatch
from albef.engine import checkpointing as ckpt
from albef.models.momentum import parameter_pairs
from albef.models.vqa import ALBEFVQA
from albef.tasks import get_task
from albef.tasks.data import build_tokenizer
from albef.tasks.vqa import VQAObjective, answer_targets, per_answer_loss, weighted_question_loss
from tests.engine import TINY_OVERRIDES, small_world
from tests.models import PAD, SEP, images, texts, tiny_model

ALPHA = 0.4


# -- the loss, by hand --------------------------------------------------------------------------------------
def test_targets_drop_the_bos_and_ignore_padding() -> None:
    ids = torch.tensor([[101, 7, 102, 0], [101, 5, 6, 102]])
    assert answer_targets(ids, 0).tolist() == [[7, 102, -100], [5, 6, 102]]


def test_per_answer_loss_sums_token_nll_and_mixes_distillation() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # (1, T=2, V=3)
    targets = torch.tensor([[0, -100]])  # the second position is padding
    nll0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert per_answer_loss(logits, targets).item() == pytest.approx(nll0)
    teacher = torch.tensor([[[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])  # uniform soft targets
    cross = -sum(F.log_softmax(logits[0, 0], -1)) / 3  # H(uniform, student) at the one real position
    mixed = per_answer_loss(logits, targets, teacher, alpha=ALPHA).item()
    assert mixed == pytest.approx((1 - ALPHA) * nll0 + ALPHA * float(cross))
    assert per_answer_loss(logits, targets, teacher, alpha=0.0).item() == pytest.approx(nll0)


def test_the_normaliser_is_the_number_of_questions() -> None:
    losses, weights = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.7, 0.3, 0.5])
    assert weighted_question_loss(losses, weights, num_questions=2).item() == pytest.approx(
        (0.7 + 0.6 + 2.0) / 2
    )


# -- the objective on the tiny model ------------------------------------------------------------------------
def _batch(k: list[int]) -> VQABatch:
    q_ids, q_mask = texts([6, 4, 5][: len(k)], seed=3)
    lengths = [3, 4, 5, 3, 4, 3][: sum(k)]
    a_ids, a_mask = texts(lengths, seed=4)
    a_ids[torch.arange(len(lengths)), torch.tensor(lengths) - 1] = SEP
    weights = torch.rand(sum(k), generator=torch.Generator().manual_seed(5))
    return VQABatch(
        images(len(k)), TokenBatch(q_ids, q_mask), TokenBatch(a_ids, a_mask), weights, k, torch.arange(len(k))
    )


def _perturbed_teachers(model: ALBEFVQA) -> ALBEFVQA:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # teachers equal to the online model would hide the EMA step and distillation
        for _, p_m in parameter_pairs(model, model.momentum_names):
            p_m.add_(0.05 * torch.randn(p_m.shape, generator=gen))
    return model


@pytest.fixture
def model() -> ALBEFVQA:
    return _perturbed_teachers(tiny_model("vqa"))  # type: ignore[arg-type]


def test_objective_equals_the_loss_written_out_per_question(model: ALBEFVQA) -> None:
    batch = _batch([2, 1, 3])
    model.momentum = 1.0  # no EMA change, so the manual teacher below sees the same weights
    loss = VQAObjective(PAD)(model, batch, ALPHA)["vqa_loss"]
    total, row = torch.zeros(()), 0
    with torch.no_grad():
        for q, n in enumerate(batch.k):
            ids, mask = batch.question.input_ids[q : q + 1], batch.question.attention_mask[q : q + 1]
            states = model.encode_question(batch.image[q : q + 1], ids, mask).expand(n, -1, -1)
            states_m = model.text_encoder_m.forward_multimodal(
                ids, mask, model.visual_encoder_m(batch.image[q : q + 1])
            )
            answers = batch.answer.input_ids[row : row + n], batch.answer.attention_mask[row : row + n]  # type: ignore[union-attr]
            logits = model.decoder_logits(*answers, states, mask.expand(n, -1))[:, :-1]
            hidden_m = model.text_decoder_m.forward_multimodal(
                *answers, states_m.expand(n, -1, -1), mask.expand(n, -1)
            )
            per = per_answer_loss(
                logits, answer_targets(answers[0], PAD), model.lm_head_m(hidden_m)[:, :-1], ALPHA
            )
            total += (batch.weights[row : row + n] * per).sum()
            row += n
    torch.testing.assert_close(loss.detach(), total / 3, atol=1e-5, rtol=1e-5)


def test_teachers_take_one_ema_step_and_get_no_gradient(model: ALBEFVQA) -> None:
    pairs = list(parameter_pairs(model, model.momentum_names))
    expected = [model.momentum * p_m.clone() + (1 - model.momentum) * p.detach().clone() for p, p_m in pairs]
    VQAObjective(PAD)(model, _batch([2, 1, 3]), ALPHA)["vqa_loss"].backward()
    for (_, p_m), want in zip(pairs, expected, strict=True):
        torch.testing.assert_close(p_m, want, atol=1e-7, rtol=0)
        assert p_m.grad is None
    online = [n for n, p in model.named_parameters() if not n.split(".")[0].endswith("_m")]
    missing = [n for n, p in model.named_parameters() if n in online and p.grad is None]
    assert missing == [], missing  # every online parameter feeds the answer loss


def test_inactive_distillation_is_the_plain_loss_but_still_updates_the_teachers(model: ALBEFVQA) -> None:
    batch = _batch([1, 2])
    without_teacher = tiny_model("vqa")
    without_teacher.distill = False  # what model.distill=false builds, as far as the objective is concerned
    plain = VQAObjective(PAD)(without_teacher, batch, ALPHA)["vqa_loss"]  # type: ignore[arg-type]
    before = [p_m.clone() for _, p_m in parameter_pairs(model, model.momentum_names)]
    inactive = VQAObjective(PAD)(model, batch, 0.0)["vqa_loss"]
    torch.testing.assert_close(inactive, plain)
    after = [p_m for _, p_m in parameter_pairs(model, model.momentum_names)]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert not torch.allclose(VQAObjective(PAD)(model, batch, ALPHA)["vqa_loss"], plain)


def test_a_test_batch_cannot_train(model: ALBEFVQA) -> None:
    batch = _batch([1, 1])
    batch.answer = None
    with pytest.raises(ValueError, match="needs answers"):
        VQAObjective(PAD)(model, batch, ALPHA)


# -- the task and the command on the small world ------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


def _argv(world: Path, out: Path, *extra: str) -> list[str]:
    argv = ["finetune", "vqa", "--output-dir", str(out), "--no-progress", "--k", "8"]
    for override in (f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, *extra):
        argv += ["--set", override]
    return argv


def test_task_data_weights_and_truncation(world: Path) -> None:
    cfg = load_config("synthetic_vqa", [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES])
    task = get_task("vqa")(cfg, build_tokenizer(cfg.data))
    dataset = task.train_dataset()
    assert len(dataset) == 128  # 96 VQA + 32 VG questions
    batch = task.collator()([dataset[i] for i in (0, 1, 127)])
    assert batch.answer is not None and len(batch.weights) == sum(batch.k) == batch.answer.input_ids.shape[0]
    per_question = torch.stack([w.sum() for w in batch.weights.split(batch.k)])
    torch.testing.assert_close(per_question, torch.tensor([1.0, 1.0, 0.5]))  # annotator shares; VG 0.5
    assert batch.question.input_ids.shape[1] <= 25
    assert bool((batch.answer.input_ids[:, 0] == task.tokenizer.cls_token_id).all())


@pytest.fixture(scope="module")
def run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vqa-finetune")
    assert main([*_argv(world, out), "--max-steps", "2"]) == 0
    return out


def test_finetune_writes_checkpoint_results_and_report(run: Path) -> None:
    assert [p.name for p in ckpt.list_checkpoints(run / ckpt.CHECKPOINT_DIR)] == ["step-00000002.pt"]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert len(json.loads((run / "vqa_result_test.json").read_text())) == 64
    report = json.loads((run / "vqa_test_report.json").read_text())
    assert {"overall", "answer_type/yes/no"} <= set(report["metrics"])
    assert json.loads((run / "summary.json").read_text())["steps"] == 2


def test_finetune_from_a_pretraining_checkpoint_and_from_a_vqa_one(
    world: Path, run: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    cfg = load_config("synthetic_vqa", [f"data.root={world}", *TINY_OVERRIDES])
    from albef.models.builders import create_model

    pretrain = create_model("pretrain", cfg.model)
    torch.save({"model": pretrain.state_dict()}, tmp_path / "pretrain.pt")
    extra = ("optim.lr=0", "optim.weight_decay=0", "runtime.keep_last=1")
    assert (
        main(
            [
                *_argv(world, tmp_path / "a", *extra),
                "--max-steps",
                "1",
                "--no-test",
                "--checkpoint",
                str(tmp_path / "pretrain.pt"),
            ]
        )
        == 0
    )
    state = torch.load(tmp_path / "a" / ckpt.CHECKPOINT_DIR / "step-00000001.pt", weights_only=False)["model"]
    fusion = cfg.model.text.fusion_layer
    for name, value in pretrain.state_dict().items():  # lr 0: the decoder still holds the fusion layers
        if name.startswith(f"text_encoder.encoder.layer.{fusion}."):
            torch.testing.assert_close(
                state[name.replace(f"text_encoder.encoder.layer.{fusion}.", "text_decoder.encoder.layer.0.")],
                value,
            )
    vqa_checkpoint = run / ckpt.CHECKPOINT_DIR / "step-00000002.pt"
    assert (
        main(
            [
                *_argv(world, tmp_path / "b"),
                "--max-steps",
                "1",
                "--no-test",
                "--checkpoint",
                str(vqa_checkpoint),
            ]
        )
        == 0
    )


def test_inactive_distill_and_validation_with_a_val_file(world: Path, tmp_path: Path) -> None:
    train = json.loads((world / "vqa_train.json").read_text())
    (tmp_path / "vqa_val.json").write_text(json.dumps([r for r in train if r["dataset"] == "vqa"][:16]))
    extra = (f"data.val_file={tmp_path / 'vqa_val.json'}", "optim.epochs=1", "data.batch_size_train=32")
    assert main([*_argv(world, tmp_path / "run", *extra), "--inactive-distill", "--no-test"]) == 0
    assert load_config(tmp_path / "run" / "config.yaml").model.alpha == 0.0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert 0.0 <= records[-1]["val/overall"] <= 100.0
    assert (tmp_path / "run" / "best.pt").is_file()


def test_a_config_for_another_task_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune", "vqa", "--config", "synthetic_pretrain", "--output-dir", str(tmp_path)]) == 2
    assert "not vqa" in capsys.readouterr().err
