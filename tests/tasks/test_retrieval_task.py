"""The retrieval finetuning task: registration, objective (id positives, same-image exclusion), CLI run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from albef.cli.main import main
from albef.config import load_config
from albef.data.collate import RetrievalBatch
from albef.data.tokenizer import TokenBatch
from albef.losses.itm import NegativeSamples
from albef.models.albef import ALBEFRetrieval
from albef.models.momentum import parameter_pairs
from albef.reporting.schema import RunReport
from albef.tasks import get_task
from albef.tasks.contrastive import ITCResult
from albef.tasks.data import build_tokenizer
from albef.tasks.retrieval import SELECT_METRIC, RetrievalObjective, RetrievalTask
from tests.engine import TINY_OVERRIDES, small_world
from tests.models import images, texts, tiny_model

ALPHA = 0.4
IDX = torch.tensor([3, 5, 3, 7, 5, 9, 3, 2])  # images 3 and 5 have several captions in the batch


@pytest.fixture
def model() -> ALBEFRetrieval:
    return tiny_model("retrieval")  # type: ignore[return-value]


@pytest.fixture
def batch() -> RetrievalBatch:
    ids, mask = texts([5, 9, 12, 7, 6, 10, 4, 8])
    return RetrievalBatch(images(8), TokenBatch(ids, mask), IDX)


def test_task_is_registered() -> None:
    assert get_task("retrieval") is RetrievalTask


def test_losses_and_queue(model: ALBEFRetrieval, batch: RetrievalBatch) -> None:
    model.queue.queue_ptr.fill_(0)
    torch.manual_seed(0)
    out = RetrievalObjective()(model, batch, ALPHA)
    assert set(out) == {"itc_loss", "itm_loss", "temp"}
    assert all(torch.isfinite(out[k]) and out[k].item() > 0 for k in ("itc_loss", "itm_loss"))
    assert model.queue.idx_queue[0, :8].tolist() == IDX.tolist()  # the image ids were enqueued
    assert int(model.queue.queue_ptr) == 8


@pytest.mark.parametrize("strategy", ["hard", "random"])
def test_negatives_never_share_the_image(model: ALBEFRetrieval, batch: RetrievalBatch, strategy: str) -> None:
    drawn: list[NegativeSamples] = []
    objective = RetrievalObjective(itm_negatives=strategy)
    draw = objective.draw_for(batch.idx)

    def spy(itc: ITCResult) -> NegativeSamples:
        drawn.append(draw(itc))
        return drawn[-1]

    objective.draw_for = lambda idx: spy  # type: ignore[method-assign]
    for seed in range(5):
        torch.manual_seed(seed)
        objective(model, batch, ALPHA)
    for negatives in drawn:
        for row, pick in enumerate(negatives.image_for_text.tolist()):
            assert pick >= 0 and IDX[pick] != IDX[row]
        for row, pick in enumerate(negatives.text_for_image.tolist()):
            assert pick >= 0 and IDX[pick] != IDX[row]


def test_gradients_reach_the_online_model_not_the_teachers(
    model: ALBEFRetrieval, batch: RetrievalBatch
) -> None:
    model.train()
    torch.manual_seed(0)
    out = RetrievalObjective()(model, batch, ALPHA)
    (out["itc_loss"] + out["itm_loss"]).backward()
    for online, teacher in parameter_pairs(model, model.momentum_names):
        assert teacher.grad is None
        assert not teacher.requires_grad
        assert online.grad is not None
    assert model.temp.grad is not None and model.itm_head.weight.grad is not None


def test_training_texts_are_not_truncated(tmp_path_factory: pytest.TempPathFactory) -> None:
    world = small_world(tmp_path_factory)
    cfg = load_config(
        "synthetic_retrieval", [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES]
    )
    task = RetrievalTask(cfg, build_tokenizer(cfg.data))
    assert task.collator().policy.max_length is None  # official: padding='longest', no truncation
    assert task.select_metric() == SELECT_METRIC == "r_mean"
    sample = task.train_dataset()[0]
    assert isinstance(sample.idx, int) and sample.caption


# -- the command ----------------------------------------------------------------------------------------------
def finetune_argv(world: Path, out: Path, *extra: str) -> list[str]:
    argv = ["finetune", "retrieval", "--output-dir", str(out), "--no-progress"]
    for value in (
        f"data.root={world}",
        "data.synthetic_size=small",
        *TINY_OVERRIDES,
        "eval.k_test=8",
        *extra,
    ):
        argv += ["--set", value]
    return argv


def test_finetune_validates_keeps_best_and_reports_test(tmp_path_factory: pytest.TempPathFactory) -> None:
    world, out = small_world(tmp_path_factory), tmp_path_factory.mktemp("ft")
    assert main(finetune_argv(world, out, "optim.epochs=2")) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val/r_mean" in r]
    assert len(validations) == 2  # 120 captions / 8 = 15 steps an epoch
    assert (out / "best.pt").is_file()
    summary = json.loads((out / "summary.json").read_text())
    best = max(v["val/r_mean"] for v in validations)
    assert (
        summary["best_epoch"] in (0, 1) and summary["validation"][summary["best_epoch"]]["val/r_mean"] == best
    )
    report = RunReport.load(out / "reports" / "retrieval-synthetic-test.json")
    assert (
        report.split == "test"
        and report.checkpoint is not None
        and report.checkpoint.path.endswith("best.pt")
    )
    assert report.metrics["r_mean"].value == pytest.approx(summary["test"]["r_mean"])
    for name in ("metrics.csv", "stages.csv", "report.md", "throughput.png"):  # rendered like the other tasks
        assert (out / "reports" / name).is_file(), name
    train = RunReport.load(out / "retrieval_train_report.json")
    assert train.kind == "training" and train.extra["best_epoch"] == summary["best_epoch"]
    assert train.metrics["val_r_mean"].value == pytest.approx(best)
    assert (out / "metrics.csv").is_file()


def test_finetune_from_a_pretraining_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A pretraining state dict converts to the retrieval model (the MLM head is dropped)."""
    world, out = small_world(tmp_path_factory), tmp_path_factory.mktemp("from_pretrain")
    cfg = load_config(
        "synthetic_pretrain", [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES]
    )
    from albef.models import create_model

    torch.manual_seed(0)
    path = out / "pretrain.pt"
    torch.save({"model": create_model("pretrain", cfg.model).state_dict()}, path)
    argv = finetune_argv(world, out / "run", "optim.max_steps=2", "data.val_file=null")
    assert main([*argv, "--checkpoint", str(path), "--no-test"]) == 0
    assert not (out / "run" / "best.pt").exists()  # no validation split, no best


@pytest.mark.parametrize(
    ("problem", "code"), [("missing_checkpoint", 4), ("pretrain_config", 2), ("missing_resume", 4)]
)
def test_finetune_usage_errors(tmp_path_factory: pytest.TempPathFactory, problem: str, code: int) -> None:
    world, out = small_world(tmp_path_factory), tmp_path_factory.mktemp("bad")
    argv = finetune_argv(world, out)
    if problem == "missing_checkpoint":
        argv += ["--checkpoint", str(out / "nope.pt")]
    elif problem == "pretrain_config":
        argv += ["--config", "synthetic_pretrain"]
    else:
        argv += ["--resume", str(out / "nope.pt")]
    assert main(argv) == code


def test_the_objective_takes_the_itm_negative_strategy_from_the_config() -> None:
    for preset, strategy in (("retrieval_coco", "hard"), ("synthetic_retrieval", "random")):
        cfg = load_config(preset)
        task = RetrievalTask.__new__(RetrievalTask)  # the objective needs only the config
        task.cfg = cfg
        objective = task.objective()
        assert isinstance(objective, RetrievalObjective) and objective.itm_negatives == strategy
