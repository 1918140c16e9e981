"""SNLI-VE and NLVR² evaluators on hand-fed batches (per-class accuracy, skipped images, split order), and
``albef finetune ve`` / ``albef evaluate ve`` on the small synthetic world."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from albef.cli.main import main
from albef.data.collate import LabelledBatch, PairBatch
from albef.data.images import SkippedImage
from albef.data.tokenizer import TokenBatch
from albef.engine.precision import resolve_precision
from albef.evaluation.classify import NO_PREDICTION, NLVREvaluator, VEEvaluator
from albef.reporting.schema import RunReport
from tests.engine import TINY_OVERRIDES, small_world

CPU = resolve_precision("fp32", torch.device("cpu"))


class FixedLogits(nn.Module):
    """A stand-in model whose logits are the first pixel of each image's channels (B, C)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.weight = nn.Parameter(torch.zeros(1))

    def logits(self, image: Tensor, *rest: Tensor) -> Tensor:
        return image[:, : self.classes, 0, 0]


def _images(classes: list[int], channels: int = 3) -> Tensor:
    """Images whose first pixel is one-hot on ``classes`` (so :class:`FixedLogits` predicts them)."""
    out = torch.zeros(len(classes), 3, 2, 2)
    out[torch.arange(len(classes)), torch.tensor(classes), 0, 0] = 1.0
    return out


def _text(n: int) -> TokenBatch:
    return TokenBatch(torch.ones(n, 2, dtype=torch.long), torch.ones(n, 2, dtype=torch.long))


def _skip(index: int) -> SkippedImage:
    return SkippedImage(path=f"img{index}.jpg", source="ve_dev.json", index=index, reason="file not found")


def test_ve_evaluator_per_class_and_skipped_examples() -> None:
    labels = [0, 1, 2, 2, 1, 0]
    predicted = [0, 2, 2, 1, 1]  # for positions 0, 1, 2, 4, 5 (3 is skipped)
    loader: list[Any] = [
        LabelledBatch(_images(predicted[:3]), _text(3), torch.tensor(labels[:3])),
        LabelledBatch(_images(predicted[3:]), _text(2), torch.tensor([1, 0]), skipped=[_skip(3)]),
    ]
    result = VEEvaluator(loader, labels, CPU).run(FixedLogits(3))  # type: ignore[arg-type]
    classes = result.outputs["classes"].tolist()
    assert classes == [0, 2, 2, NO_PREDICTION, 1, 1]
    assert result.metrics["accuracy"].value == pytest.approx(100 * 3 / 6)
    per_class = {k: m.value for k, m in result.metrics.items() if m.group == "class"}
    assert per_class == pytest.approx(
        {"accuracy_contradiction": 50.0, "accuracy_neutral": 50.0, "accuracy_entailment": 50.0}
    )
    assert result.extra["skipped_examples"] == 1 and result.n_samples == 6
    # Intervals over pairs (a skipped pair counts as wrong), per class over that class's pairs.
    overall = result.metrics["accuracy"]
    assert overall.n == 6 and overall.ci_low is not None and overall.ci_high is not None
    assert overall.ci_low < 50.0 < overall.ci_high
    assert result.metrics["accuracy_neutral"].n == 2
    assert result.extra["class_counts"] == {"contradiction": 2, "neutral": 2, "entailment": 2}
    assert result.stages["classify"].num_batches == 1  # the first batch is warm-up


def test_nlvr_evaluator_consistency_and_order() -> None:
    ids = ["dev-1-0-0", "dev-1-1-0", "dev-2-0-0", "dev-2-1-0"]
    labels = [1, 0, 1, 1]
    batch = PairBatch(_images([1, 0, 1, 0]), _images([0] * 4), _text(4), torch.tensor(labels))
    evaluator = NLVREvaluator([batch], labels, ids, CPU, identifier_source="file")  # type: ignore[arg-type]
    result = evaluator.run(FixedLogits(2))
    assert result.outputs["predictions"] == [True, False, True, False]
    assert result.metrics["accuracy"].value == pytest.approx(75.0)
    assert result.metrics["consistency"].value == pytest.approx(50.0)  # sentence dev-1 right, dev-2 not
    # Accuracy resamples the 4 pairs, consistency the 2 sentence groups (one right, one not: [0, 100]).
    assert result.metrics["accuracy"].n == 4 and result.metrics["consistency"].n == 2
    assert (result.metrics["consistency"].ci_low, result.metrics["consistency"].ci_high) == (0.0, 100.0)
    assert (result.extra["groups"], result.extra["identifier_source"]) == (2, "file")
    with pytest.raises(ValueError, match="identifiers"):
        NLVREvaluator([batch], labels, ids[:2], CPU)  # type: ignore[arg-type]


def test_an_evaluator_restores_training_mode() -> None:
    model = FixedLogits(3).train()
    loader: list[Any] = [LabelledBatch(_images([0]), _text(1), torch.tensor([0]))]
    VEEvaluator(loader, [0], CPU).run(model)  # type: ignore[arg-type]
    assert model.training


def _argv(command: list[str], world: Path, out: Path, *extra: str) -> list[str]:
    argv = [*command, "--output-dir", str(out), "--no-progress"]
    for override in (f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, *extra):
        argv += ["--set", override]
    return argv


def test_finetune_and_evaluate_ve(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    world = small_world(tmp_path_factory)
    assert main([*_argv(["pretrain"], world, tmp_path / "pre"), "--max-steps", "1"]) == 0
    pre = tmp_path / "pre" / "checkpoints" / "step-00000001.pt"
    run = tmp_path / "ve"
    assert main([*_argv(["finetune", "ve"], world, run, "optim.epochs=1"), "--checkpoint", str(pre)]) == 0
    train = RunReport.load(run / "ve_train_report.json")
    assert {"val_accuracy", "val_accuracy_entailment"} <= set(train.metrics)
    test = RunReport.load(run / "ve_test_report.json")
    assert (test.task, test.split, test.extra["n_samples"]) == ("ve", "test", 24)  # 4 images x 6 hypotheses
    argv = ["evaluate", "ve", "--config", str(run / "config.yaml"), "--checkpoint", str(run / "best.pt")]
    assert main([*argv, "--split", "dev", "--output-dir", str(tmp_path / "eval"), "--log-samples"]) == 0
    dev = RunReport.load(tmp_path / "eval" / "ve_dev_report.json")
    assert sum(m.group == "class" for m in dev.metrics.values()) == 3
    lines = [json.loads(x) for x in (tmp_path / "eval" / "ve_dev-samples.jsonl").read_text().splitlines()]
    names = ("contradiction", "neutral", "entailment")
    assert all(r["predicted"] == names[max(range(3), key=r["logits"].__getitem__)] for r in lines)
    hits = [r["predicted"] == r["true"] for r in lines]
    assert dev.metrics["accuracy"].value == pytest.approx(100 * sum(hits) / len(hits))
    assert main(["evaluate", "ve", "--config", "synthetic_nlvr", "--checkpoint", str(pre)]) == 2
