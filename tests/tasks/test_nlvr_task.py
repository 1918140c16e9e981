"""Text assignment, NLVR² and SNLI-VE objectives, the shared key/value projections, and the CLI chain
pretrain -> pretrain-ta -> finetune nlvr -> evaluate nlvr -> nlvr-score on the small synthetic world."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from albef.cli.main import main
from albef.data.collate import ImageTextBatch, LabelledBatch, PairBatch
from albef.data.tokenizer import TokenBatch
from albef.models.bert import AttentionBlock, BertLayer
from albef.models.classify import ALBEFNLVR, ALBEFVE, ALBEFTextAssignment
from albef.reporting.schema import RunReport
from albef.tasks.nlvr import NLVRObjective, VEObjective, distilled_cross_entropy
from albef.tasks.text_assignment import (
    TA_FIRST,
    TA_NEITHER,
    TA_SECOND,
    TextAssignmentObjective,
    partner_weights,
    sample_image_pairs,
)
from tests.engine import TINY_OVERRIDES, small_world
from tests.models import images, texts, tiny_model

FUSION = 6  # albef_tiny: text layers 0-5, two-image fusion layers 6-17


# -- text assignment sampling --------------------------------------------------------------------------------
def test_partner_weights_are_a_softmax_without_the_diagonal() -> None:
    feat = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    weights = partner_weights(feat, temperature=0.5)
    full = torch.softmax(feat @ feat.T / 0.5, dim=1)
    assert torch.equal(weights.diagonal(), torch.zeros(4))
    off = ~torch.eye(4, dtype=torch.bool)
    assert torch.allclose(weights[off], full[off])


@pytest.mark.parametrize("seed", range(5))
def test_ta_sampling_never_pairs_an_image_with_itself(seed: int) -> None:
    torch.manual_seed(seed)
    size = 64
    weights = partner_weights(F.normalize(torch.randn(size, 16), dim=-1), temperature=0.07)
    pairs = sample_image_pairs(weights)
    own = torch.arange(size)
    assert not (pairs.first == pairs.second).any()
    first, second, neither = (pairs.labels == c for c in (TA_FIRST, TA_SECOND, TA_NEITHER))
    assert torch.equal(pairs.first[first], own[first])  # label 0: own image first, partner second
    assert torch.equal(pairs.second[second], own[second])  # label 1: partner first, own image second
    assert not (pairs.first[second] == own[second]).any() and not (pairs.second[first] == own[first]).any()
    assert not (pairs.first[neither] == own[neither]).any()  # label 2: two partners, neither is the own
    assert not (pairs.second[neither] == own[neither]).any()


def test_ta_sampling_class_shares_and_partner_choice() -> None:
    torch.manual_seed(0)
    size = 900
    weights = torch.full((size, size), 1e-9).fill_diagonal_(0.0)
    weights[:, 0], weights[0, 1] = 1.0, 1.0  # everyone's favourite partner is image 0 (image 0's is 1)
    weights[0, 0] = 0.0
    pairs = sample_image_pairs(weights)
    shares = torch.bincount(pairs.labels, minlength=3).float() / size
    assert torch.allclose(shares, torch.full((3,), 1 / 3), atol=0.06)
    single = pairs.labels != TA_NEITHER
    partner = torch.where(pairs.labels == TA_FIRST, pairs.second, pairs.first)[single]
    assert (partner[1:] == 0).float().mean() > 0.99  # drawn by weight


def test_ta_sampling_is_reproducible_and_needs_three_images() -> None:
    weights = partner_weights(F.normalize(torch.randn(8, 4), dim=-1))
    torch.manual_seed(3)
    a = sample_image_pairs(weights)
    torch.manual_seed(3)
    b = sample_image_pairs(weights)
    assert all(torch.equal(x, y) for x, y in ((a.first, b.first), (a.second, b.second), (a.labels, b.labels)))
    with pytest.raises(ValueError, match="at least 3"):
        sample_image_pairs(partner_weights(torch.eye(2)))


def test_ta_objective_trains_encoders_and_head_not_the_projections() -> None:
    model = tiny_model("nlvr_pretrain").train()
    assert isinstance(model, ALBEFTextAssignment)
    ids, mask = texts([5, 7, 4, 6])
    torch.manual_seed(0)
    out = TextAssignmentObjective()(model, ImageTextBatch(images(4), TokenBatch(ids, mask)), 0.0)
    assert set(out) == {"ta_loss", "ta_accuracy"} and torch.isfinite(out["ta_loss"])
    assert 0.0 <= float(out["ta_accuracy"]) <= 1.0
    out["ta_loss"].backward()
    for name in (
        "visual_encoder.cls_token",
        "ta_head.weight",
        "text_encoder.embeddings.word_embeddings.weight",
    ):
        assert model.get_parameter(name).grad is not None, name
    for name in ("vision_proj.weight", "text_proj.weight", "temp"):
        assert model.get_parameter(name).grad is None, name


def test_random_ta_partners_ignore_the_image_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """``partners="random"`` draws the same pairs whatever the model (uniform weights, the same RNG calls as
    :func:`sample_image_pairs` on them); ``hard`` draws depend on the image features."""
    ids, mask = texts([5, 7, 4, 6, 5, 6])
    batch = ImageTextBatch(images(6), TokenBatch(ids, mask))
    drawn: dict[str, list[Tensor]] = {"random": [], "hard": []}
    original = sample_image_pairs

    def spy(weights: Tensor) -> object:
        pairs = original(weights)
        drawn[strategy].append(torch.stack([pairs.first, pairs.second, pairs.labels]))
        return pairs

    monkeypatch.setattr("albef.tasks.text_assignment.sample_image_pairs", spy)
    for strategy in ("random", "hard"):
        for seed in (0, 1):
            model = tiny_model("nlvr_pretrain", seed=seed)
            torch.manual_seed(11)
            TextAssignmentObjective(strategy)(model, batch, 0.0)
    monkeypatch.undo()
    torch.manual_seed(11)
    uniform = original(torch.ones(6, 6).fill_diagonal_(0.0))
    expected = torch.stack([uniform.first, uniform.second, uniform.labels])
    assert torch.equal(drawn["random"][0], expected) and torch.equal(drawn["random"][1], expected)
    assert not torch.equal(drawn["hard"][0], drawn["hard"][1])
    with pytest.raises(ValueError, match="unknown partner strategy 'easy'"):
        TextAssignmentObjective("easy")


# -- shared key/value ----------------------------------------------------------------------------------------
def _cross(model: nn.Module, layer: int) -> AttentionBlock:
    block = model.text_encoder.encoder.layer[layer]
    assert isinstance(block, BertLayer) and isinstance(block.crossattention, AttentionBlock)
    return block.crossattention


def test_shared_key_value_is_one_tensor_with_gradient_from_both_images() -> None:
    model = tiny_model("nlvr")
    assert isinstance(model, ALBEFNLVR)
    key = _cross(model, FUSION).self.key
    assert key is _cross(model, FUSION + 1).self.key
    assert sum(p is key.weight for p in model.parameters()) == 1  # the optimizer sees it once
    calls: list[tuple[Tensor, Tensor]] = []

    def keep(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        output.retain_grad()
        calls.append((args[0].detach(), output))

    handle = key.register_forward_hook(keep)
    image0, image1 = images(2, seed=1), images(2, seed=2)
    ids, mask = texts([5, 8])
    model.logits(image0, image1, ids, mask).sum().backward()
    handle.remove()
    with torch.no_grad():
        embeds0, embeds1 = model.visual_encoder(image0), model.visual_encoder(image1)
    first_pair = calls[:2]  # layers 6 (image 0) and 7 (image 1)
    assert torch.allclose(first_pair[0][0], embeds0, atol=1e-6)
    assert torch.allclose(first_pair[1][0], embeds1, atol=1e-6)
    parts = [torch.einsum("bso,bsi->oi", out.grad, x) for x, out in first_pair]
    assert all(part.abs().sum() > 0 for part in parts)  # each image contributes
    assert torch.allclose(key.weight.grad, parts[0] + parts[1], atol=1e-6)  # and nothing else does


# -- classification objectives -------------------------------------------------------------------------------
def test_distilled_cross_entropy_by_hand() -> None:
    logits, teacher = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    targets = torch.tensor([0, 1])
    log_p = logits.log_softmax(dim=1)
    hard = -(log_p[0, 0] + log_p[1, 1]) / 2
    q = teacher.softmax(dim=1)
    soft = -(q * log_p).sum(dim=1).mean()
    assert torch.allclose(distilled_cross_entropy(logits, targets, teacher, 0.4), 0.6 * hard + 0.4 * soft)
    assert torch.allclose(distilled_cross_entropy(logits, targets, None, 0.4), hard)


def _nlvr_batch() -> PairBatch:
    ids, mask = texts([6, 4, 5])
    return PairBatch(images(3, seed=1), images(3, seed=2), TokenBatch(ids, mask), torch.tensor([1, 0, 1]))


def test_nlvr_objective_steps_the_teacher_then_distils() -> None:
    model = tiny_model("nlvr")
    assert isinstance(model, ALBEFNLVR)
    with torch.no_grad():  # a teacher that differs from the student
        for p in model.cls_head_m.parameters():
            p.add_(0.5)
    expected_model = copy.deepcopy(model)
    batch = _nlvr_batch()
    out = NLVRObjective()(model, batch, 0.4)
    args = (batch.image0, batch.image1, batch.text.input_ids, batch.text.attention_mask)
    with torch.no_grad():
        logits = expected_model.logits(*args)
        expected_model.update_momentum()
        expected = distilled_cross_entropy(logits, batch.label, expected_model.logits_m(*args), 0.4)
    assert torch.allclose(out["cls_loss"], expected, atol=1e-6)
    for (name, p), p_ref in zip(
        model.cls_head_m.named_parameters(), expected_model.cls_head_m.parameters(), strict=True
    ):
        assert torch.equal(p, p_ref), name
    out["cls_loss"].backward()
    assert all(p.grad is None for n, p in model.named_parameters() if "_m." in n)
    assert model.cls_head[0].weight.grad is not None


def test_ve_objective_without_distillation_is_cross_entropy() -> None:
    model = tiny_model("ve")
    assert isinstance(model, ALBEFVE)
    model.distill = False
    ids, mask = texts([6, 4])
    batch = LabelledBatch(images(2), TokenBatch(ids, mask), torch.tensor([2, 0]))
    out = VEObjective()(model, batch, 0.4)
    logits = model.logits(batch.image, ids, mask)
    assert torch.allclose(out["cls_loss"], F.cross_entropy(logits, batch.label), atol=1e-6)
    assert float(out["accuracy"]) == float((logits.argmax(1) == batch.label).float().mean())


# -- CLI chain on the small world ----------------------------------------------------------------------------
def _argv(command: list[str], world: Path, out: Path, *extra: str) -> list[str]:
    argv = [*command, "--output-dir", str(out), "--no-progress"]
    for override in (f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, *extra):
        argv += ["--set", override]
    return argv


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    world, base = small_world(tmp_path_factory), tmp_path_factory.mktemp("nlvr-chain")
    runs = {"world": world, "pre": base / "pre", "ta": base / "ta", "nlvr": base / "nlvr"}
    assert main([*_argv(["pretrain"], world, runs["pre"]), "--max-steps", "2"]) == 0
    pre = runs["pre"] / "checkpoints" / "step-00000002.pt"
    assert (
        main([*_argv(["pretrain-ta"], world, runs["ta"]), "--max-steps", "2", "--checkpoint", str(pre)]) == 0
    )
    ta = runs["ta"] / "checkpoints" / "step-00000002.pt"
    argv = _argv(["finetune", "nlvr"], world, runs["nlvr"], "optim.epochs=1", "data.batch_size_test=8")
    assert main([*argv, "--checkpoint", str(ta)]) == 0
    return runs


def test_pretrain_ta_writes_a_training_report(chain: dict[str, Path]) -> None:
    report = RunReport.load(chain["ta"] / "nlvr_pretrain_train_report.json")
    assert (report.kind, report.task, report.dataset, report.extra["steps"]) == (
        "training",
        "nlvr_pretrain",
        "synthetic",
        2,
    )
    assert {"train_ta_loss_first", "train_ta_accuracy_last"} <= set(report.metrics)
    assert report.stages["train_step"].num_batches == 2
    assert 0 < report.extra["data_time_share"] < 1  # the share of the step spent waiting for data


def test_finetune_nlvr_validates_keeps_best_and_tests(chain: dict[str, Path]) -> None:
    run = chain["nlvr"]
    assert (run / "best.pt").is_file()
    train = RunReport.load(run / "nlvr_train_report.json")
    assert {"val_accuracy", "val_consistency"} <= set(train.metrics) and train.extra["best_epoch"] == 0
    test = RunReport.load(run / "nlvr_test_report.json")
    assert (test.kind, test.split, test.extra["identifier_source"]) == ("evaluation", "test", "images")
    assert 0 <= test.metrics["consistency"].value <= test.metrics["accuracy"].value <= 100
    lines = (run / "nlvr_predictions_test.csv").read_text().splitlines()
    assert len(lines) == test.extra["n_samples"] and all(line.endswith((",True", ",False")) for line in lines)


def test_evaluate_nlvr_then_score_with_the_official_rules(
    chain: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, world = chain["nlvr"], chain["world"]
    argv = ["evaluate", "nlvr", "--config", str(run / "config.yaml"), "--checkpoint", str(run / "best.pt")]
    assert main([*argv, "--split", "dev", "--output-dir", str(run / "eval"), "--log-samples"]) == 0
    report = json.loads((run / "eval" / "nlvr_dev_report.json").read_text())
    predictions = run / "eval" / "nlvr_predictions_dev.csv"
    samples = [json.loads(x) for x in (run / "eval" / "nlvr_dev-samples.jsonl").read_text().splitlines()]
    csv_rows = dict(line.split(",") for line in predictions.read_text().splitlines())
    assert {s["identifier"]: s["predicted"] for s in samples} == csv_rows
    hits = [s["predicted"] == s["true"] for s in samples]
    assert report["metrics"]["accuracy"]["value"] == pytest.approx(100 * sum(hits) / len(hits))
    capsys.readouterr()
    labels = world / "nlvr_raw" / "dev.jsonl"
    assert main(["evaluate", "nlvr-score", "--predictions", str(predictions), "--labels", str(labels)]) == 0
    printed = dict(line.split("=") for line in capsys.readouterr().out.split())
    assert float(printed["accuracy"]) * 100 == pytest.approx(report["metrics"]["accuracy"]["value"])
    assert float(printed["consistency"]) * 100 == pytest.approx(report["metrics"]["consistency"]["value"])
    predictions.write_text("\n".join(predictions.read_text().splitlines()[1:]) + "\n")
    assert main(["evaluate", "nlvr-score", "--predictions", str(predictions), "--labels", str(labels)]) == 3
    assert "1 of" in capsys.readouterr().err
