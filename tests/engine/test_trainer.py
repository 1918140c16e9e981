"""The one training loop: exact resume after SIGKILL, NaN detection, accumulation, metrics, start-up checks.

The end-to-end tests run ``albef pretrain`` on the small synthetic world with a tiny model; the
accumulation tests drive :class:`Trainer` directly with a linear model, where the arithmetic is exact
enough to compare.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from albef.cli.main import main
from albef.config import load_config
from albef.config.io import ConfigError
from albef.config.schema import ExperimentConfig, OptimConfig
from albef.data.collate import Batch
from albef.data.loaders import build_loader
from albef.engine import checkpointing as ckpt
from albef.engine.precision import resolve_precision
from albef.engine.trainer import NonFiniteLossError, Trainer
from albef.tasks.pretrain import PretrainObjective
from albef.workflows.train import train
from tests.engine import TINY_OVERRIDES, assert_identical, pretrain_argv, sigkill_when_ready, small_world

REPO_ROOT = Path(__file__).resolve().parents[2]
HANG_HELPER = Path(__file__).with_name("_pretrain_hang.py")
RESUME_SETS = (
    "optim.max_steps=8",  # 6 steps an epoch: the resumed run crosses an epoch boundary
    "optim.warmup_steps=2",
    "runtime.checkpoint_every=2",
    "runtime.keep_last=10",
    "data.test_file=null",
)
NO_BEST = {"best_value": None, "best_epoch": None}  # pretraining runs no validation
TIMING_KEYS = {"samples_per_s", "data_time", "data_share", "step_time", "peak_memory_mb"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


@pytest.fixture(scope="module")
def uninterrupted(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-step run that nothing interrupts."""
    out = tmp_path_factory.mktemp("uninterrupted")
    assert main(pretrain_argv(world, out, *RESUME_SETS)) == 0
    return out


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _kill_when_hanging(argv: list[str], hang_at: int, tmp_path: Path) -> None:
    ready = tmp_path / "hanging"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(HANG_HELPER), str(hang_at), str(ready), *argv],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sigkill_when_ready(proc, ready, f"step {hang_at + 1}")


def test_sigkill_mid_epoch_then_resume_auto_is_bit_identical(
    world: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    argv = pretrain_argv(world, run, *RESUME_SETS)
    _kill_when_hanging(argv, hang_at=5, tmp_path=tmp_path)  # killed during step 6, after step 5 was logged

    directory = run / ckpt.CHECKPOINT_DIR
    assert [p.name for p in ckpt.list_checkpoints(directory)] == ["step-00000002.pt", "step-00000004.pt"]
    newest = ckpt.load_training_checkpoint(directory / "step-00000004.pt")
    assert newest["state"] == {**NO_BEST, "epoch": 0, "batch_in_epoch": 4, "global_step": 4}  # mid-epoch
    assert [r["step"] for r in _metrics(run)] == [1, 2, 3, 4, 5]

    assert main([*argv, "--resume", "auto"]) == 0

    expected = ckpt.load_training_checkpoint(uninterrupted / ckpt.CHECKPOINT_DIR / "step-00000008.pt")
    got = ckpt.load_training_checkpoint(directory / "step-00000008.pt")
    assert got["state"] == expected["state"] == {**NO_BEST, "epoch": 1, "batch_in_epoch": 2, "global_step": 8}
    assert any(k.endswith("queue.image_queue") for k in got["model"])  # queues are in the model state
    for part in ("model", "optimizer", "rng", "state", "scaler"):
        assert_identical(got[part], expected[part], part)
    # The log holds each step once (the killed run's step 5 was redone) with the same values.
    resumed, reference = _metrics(run), _metrics(uninterrupted)
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(resumed, reference, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING_KEYS} == {
            k: v for k, v in b.items() if k not in TIMING_KEYS
        }
    # ... and the summary covers all 8 steps, not only those after the resume.
    summaries = [json.loads((r / "summary.json").read_text()) for r in (run, uninterrupted)]
    for key in ("steps", "loss_first", "loss_last"):
        assert summaries[0][key] == summaries[1][key]


def test_metrics_has_one_line_per_step_with_every_part(uninterrupted: Path) -> None:
    records = _metrics(uninterrupted)
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["epoch"] for r in records] == [0] * 6 + [1] * 2  # epoch in which the step was taken
    expected_keys = {"itc_loss", "itm_loss", "mlm_loss", "loss", "lr", "alpha", "temp", *TIMING_KEYS}
    for record in records:
        assert expected_keys <= record.keys()
        assert record["loss"] == pytest.approx(record["itc_loss"] + record["itm_loss"] + record["mlm_loss"])
        assert all(record[k] > 0 for k in ("samples_per_s", "step_time", "peak_memory_mb"))
        assert record["data_time"] >= 0
    # Warm-up over 2 steps from warmup_lr, then cosine down to min_lr at the last step.
    cfg = load_config("synthetic_pretrain").optim
    assert records[0]["lr"] == pytest.approx(cfg.warmup_lr)
    assert records[2]["lr"] == pytest.approx(cfg.lr)
    assert records[-1]["lr"] < records[3]["lr"]
    # Alpha ramps over epoch 0 (6 iterations), then stays at model.alpha.
    assert [r["alpha"] for r in records] == pytest.approx([0.4 * i / 6 for i in range(6)] + [0.4, 0.4])
    # Checkpoints every 2 steps and at the epoch end (step 6), all kept.
    assert [p.name for p in ckpt.list_checkpoints(uninterrupted / ckpt.CHECKPOINT_DIR)] == [
        ckpt.checkpoint_name(s) for s in (2, 4, 6, 8)
    ]


def _small_config(world: Path, out: Path, *extra: str) -> ExperimentConfig:
    overrides = [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, *extra]
    return load_config("synthetic_pretrain", [*overrides, f"runtime.output_dir={out}"])


def test_nan_loss_names_the_step_and_part_and_keeps_the_last_checkpoint(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = PretrainObjective.__call__

    def poisoned(self: PretrainObjective, model: Any, batch: Any, alpha: float) -> dict[str, Tensor]:
        out = original(self, model, batch, alpha)
        calls.append(1)
        if len(calls) == 3:
            out["mlm_loss"] = out["mlm_loss"] * float("nan")
        return out

    monkeypatch.setattr(PretrainObjective, "__call__", poisoned)
    cfg = _small_config(
        world, tmp_path, "optim.max_steps=5", "runtime.checkpoint_every=2", "data.test_file=null"
    )
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(epoch 0, batch 2\): mlm_loss is nan") as err:
        train(cfg, show_progress=False)
    assert str(tmp_path / ckpt.CHECKPOINT_DIR) in str(err.value)
    directory = tmp_path / ckpt.CHECKPOINT_DIR
    assert [p.name for p in directory.iterdir()] == ["step-00000002.pt"]
    good = ckpt.load_training_checkpoint(directory / "step-00000002.pt")
    assert good["state"]["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())
    assert [r["step"] for r in _metrics(tmp_path)] == [1, 2]  # nothing logged for the bad step


def test_queue_not_a_multiple_of_the_global_batch_fails_before_any_step(world: Path, tmp_path: Path) -> None:
    cfg = _small_config(world, tmp_path, "data.batch_size_train=12")  # 32 % 12 != 0
    with pytest.raises(ConfigError, match="queue_size 32 must be a multiple of the global batch size 12"):
        train(cfg, show_progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / ckpt.CHECKPOINT_DIR).exists()


def test_queue_mismatch_is_a_one_line_cli_error(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = pretrain_argv(world, tmp_path, "data.batch_size_train=12")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "queue_size 32 must be a multiple of the global batch size 12" in err
    assert "Traceback" not in err


# -- gradient accumulation on a linear model ----------------------------------------------------------------
@dataclass
class _Pairs(Batch):
    x: Tensor
    y: Tensor


class _Regression(Dataset[tuple[Tensor, Tensor]]):
    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=gen, dtype=torch.float64)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]], dtype=torch.float64) + 0.1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]


def _collate(samples: list[tuple[Tensor, Tensor]]) -> _Pairs:
    return _Pairs(x=torch.stack([s[0] for s in samples]), y=torch.stack([s[1] for s in samples]))


class _Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: nn.Module, batch: _Pairs, alpha: float) -> dict[str, Tensor]:
        self.calls += 1
        return {"mse_loss": F.mse_loss(model(batch.x), batch.y)}


def _fit_linear(
    tmp_path: Path, n: int, batch_size: int, accum: int, epochs: int
) -> tuple[nn.Linear, Trainer, _Counting]:
    torch.manual_seed(0)
    model = nn.Linear(4, 1).double()
    cfg = ExperimentConfig()
    cfg.optim = OptimConfig(lr=0.05, warmup_steps=1, epochs=epochs, accum_steps=accum, weight_decay=0.01)
    cfg.runtime.output_dir = str(tmp_path)
    loader = build_loader(_Regression(n), batch_size, _collate, train=True, seed=3)
    objective = _Counting()
    trainer = Trainer(
        cfg, model, objective, loader, resolve_precision("fp32", torch.device("cpu")), show_progress=False
    )
    trainer.fit()
    return model, trainer, objective


def test_accumulation_of_two_half_batches_equals_one_full_batch(tmp_path: Path) -> None:
    # 36 samples: batch 8 gives 4 iterations (drop_last), batch 4 gives 9, i.e. 4 accumulation groups + 1
    # trailing micro-batch that must not leak its gradient into the next epoch.
    full, full_trainer, _ = _fit_linear(tmp_path / "full", 36, batch_size=8, accum=1, epochs=2)
    halves, half_trainer, objective = _fit_linear(tmp_path / "halves", 36, batch_size=4, accum=2, epochs=2)
    assert full_trainer.state.global_step == half_trainer.state.global_step == 8
    assert objective.calls == 16  # the 9th micro-batch of each epoch is skipped, like drop_last
    torch.testing.assert_close(halves.weight, full.weight, rtol=0, atol=1e-12)
    torch.testing.assert_close(halves.bias, full.bias, rtol=0, atol=1e-12)
    assert all(p.grad is None for p in halves.parameters())  # nothing left accumulated
    assert [r["step"] for r in _metrics(tmp_path / "halves")] == list(range(1, 9))  # one per optimizer step


def test_accumulation_steps_half_as_often(tmp_path: Path) -> None:
    _, trainer, objective = _fit_linear(tmp_path, 32, batch_size=4, accum=2, epochs=1)
    assert objective.calls == 8 and trainer.state.global_step == 4
    assert trainer.state == type(trainer.state)(epoch=1, batch_in_epoch=0, global_step=4)


class _SlowRegression(_Regression):
    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        time.sleep(SAMPLE_WAIT)
        return super().__getitem__(i)


class _SlowCounting(_Counting):
    def __call__(self, model: nn.Module, batch: _Pairs, alpha: float) -> dict[str, Tensor]:
        time.sleep(STEP_WAIT)
        return super().__call__(model, batch, alpha)


SAMPLE_WAIT, STEP_WAIT = 0.005, 0.02


def test_step_time_and_data_time_cover_every_micro_batch(tmp_path: Path) -> None:
    """With accumulation a step is all its micro-batches: samples/s counts their samples over their time."""
    cfg = ExperimentConfig()
    cfg.optim = OptimConfig(lr=0.05, warmup_steps=1, epochs=1, accum_steps=2)
    cfg.runtime.output_dir = str(tmp_path)
    loader = build_loader(_SlowRegression(16), 4, _collate, train=True, seed=3)
    model = nn.Linear(4, 1).double()
    cpu = resolve_precision("fp32", torch.device("cpu"))
    Trainer(cfg, model, _SlowCounting(), loader, cpu, show_progress=False).fit()
    for record in _metrics(tmp_path):  # 2 micro-batches of 4 samples: at least 8 sample waits + 2 step waits
        assert record["data_time"] >= 8 * SAMPLE_WAIT
        assert record["step_time"] >= 8 * SAMPLE_WAIT + 2 * STEP_WAIT
        assert record["samples_per_s"] == pytest.approx(8 / record["step_time"])
        assert record["data_share"] == pytest.approx(record["data_time"] / record["step_time"])
        assert 0 < record["data_share"] < 1


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_infinite_loss_is_detected_too(tmp_path: Path, bad: float) -> None:
    cfg = ExperimentConfig()
    cfg.optim = OptimConfig(epochs=1, warmup_steps=0)
    cfg.runtime.output_dir = str(tmp_path)
    loader = build_loader(_Regression(16), 4, _collate, train=True)

    def objective(model: nn.Module, batch: _Pairs, alpha: float) -> dict[str, Tensor]:
        loss = F.mse_loss(model(batch.x), batch.y)
        return {"fit_loss": loss, "bad_loss": loss * 0 + bad if trainer.state.global_step == 1 else loss * 0}

    trainer = Trainer(
        cfg,
        nn.Linear(4, 1).double(),
        objective,
        loader,
        resolve_precision("fp32", torch.device("cpu")),
        show_progress=False,
    )
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*bad_loss is -?inf"):
        trainer.fit()


def test_validation_each_epoch_keeps_the_best_epoch_and_survives_resume(tmp_path: Path) -> None:
    scores = {0: 0.3, 1: 0.9, 2: 0.5}  # epoch 1 is the best
    seen: list[tuple[int, bool]] = []

    def evaluate(model: nn.Module, epoch: int) -> dict[str, float]:
        seen.append((epoch, model.training))
        return {"score": scores[epoch], "other": -1.0}

    def fit(out: Path, epochs: int, resume: str | None = None) -> tuple[nn.Linear, Trainer]:
        torch.manual_seed(0)
        model = nn.Linear(4, 1).double()
        cfg = ExperimentConfig()
        cfg.optim = OptimConfig(lr=0.05, warmup_steps=1, epochs=epochs)
        cfg.runtime.output_dir = str(out)
        loader = build_loader(_Regression(16), 4, _collate, train=True, seed=3)
        trainer = Trainer(
            cfg,
            model,
            _Counting(),
            loader,
            resolve_precision("fp32", torch.device("cpu")),
            show_progress=False,
            evaluate=evaluate,
            select="score",
        )
        result = trainer.fit(resume)
        assert result.best_checkpoint == out / "best.pt"
        return model, trainer

    model, trainer = fit(tmp_path / "run", epochs=3)
    assert seen == [(0, False), (1, False), (2, False)]  # once per epoch, in eval mode
    assert (trainer.state.best_epoch, trainer.state.best_value) == (1, 0.9)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert (best["epoch"], best["metric"], best["value"]) == (1, "score", 0.9)
    assert not torch.equal(best["model"]["weight"], model.weight.detach())  # epoch 1's weights, not the last
    val = [r for r in _metrics(tmp_path / "run") if "val/score" in r]
    assert [(r["epoch"], r["val/score"], r["step"]) for r in val] == [(0, 0.3, 4), (1, 0.9, 8), (2, 0.5, 12)]

    # Kill after epoch 1 (drop the last checkpoint) and resume: the best survives in the checkpointed state,
    # so the worse epoch 2 does not overwrite best.pt.
    last = ckpt.list_checkpoints(tmp_path / "run" / ckpt.CHECKPOINT_DIR)[-1]
    assert last.name == ckpt.checkpoint_name(12)
    last.unlink()
    seen.clear()
    _, resumed = fit(tmp_path / "run", epochs=3, resume="auto")
    assert seen == [(2, False)]
    assert (resumed.state.best_epoch, resumed.state.best_value) == (1, 0.9)
    again = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert again["epoch"] == 1
    torch.testing.assert_close(again["model"]["weight"], best["model"]["weight"], rtol=0, atol=0)


def test_a_checkpoint_of_another_world_size_resumes_only_at_an_epoch_boundary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, trainer, _ = _fit_linear(tmp_path, 32, batch_size=4, accum=1, epochs=1)
    path = ckpt.list_checkpoints(tmp_path / ckpt.CHECKPOINT_DIR)[-1]
    payload = ckpt.load_training_checkpoint(path)
    assert payload["world_size"] == 1 and payload["state"]["batch_in_epoch"] == 0
    two_ranks = {**payload, "world_size": 2, "rng_per_rank": [payload["rng"], payload["rng"]]}
    trainer.resume(path, two_ranks)  # epoch boundary: the next epoch is sharded over this job's ranks
    assert trainer.state.epoch == 1 and "resuming a 2-rank checkpoint on 1 ranks" in capsys.readouterr().err
    mid_epoch = {**two_ranks, "state": {**payload["state"], "epoch": 0, "batch_in_epoch": 3}}
    with pytest.raises(ConfigError, match=r"written by a 2-rank job in the middle of epoch 0 \(batch 3\)"):
        trainer.resume(path, mid_epoch)


class _TwoLosses:
    """A squared and an absolute error; ``scale`` multiplies the absolute one inside the objective."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, model: nn.Module, batch: _Pairs, alpha: float) -> dict[str, Tensor]:
        out = model(batch.x)
        return {"mse_loss": F.mse_loss(out, batch.y), "abs_loss": self.scale * F.l1_loss(out, batch.y)}


def _fit_two_losses(tmp_path: Path, scale: float, weights: dict[str, float]) -> nn.Linear:
    torch.manual_seed(0)
    model = nn.Linear(4, 1).double()
    cfg = ExperimentConfig()
    cfg.optim = OptimConfig(lr=0.05, warmup_steps=1, epochs=2, loss_weights=weights)
    cfg.runtime.output_dir = str(tmp_path)
    loader = build_loader(_Regression(32), 8, _collate, train=True, seed=3)
    cpu = resolve_precision("fp32", torch.device("cpu"))
    Trainer(cfg, model, _TwoLosses(scale), loader, cpu, show_progress=False).fit()
    return model


def test_loss_weights_train_as_the_weighted_sum_and_log_each_loss_unweighted(tmp_path: Path) -> None:
    weighted = _fit_two_losses(tmp_path / "weighted", 1.0, {"abs": 3.0})
    prescaled = _fit_two_losses(tmp_path / "prescaled", 3.0, {})
    plain = _fit_two_losses(tmp_path / "plain", 1.0, {})
    assert torch.equal(weighted.weight, prescaled.weight) and torch.equal(weighted.bias, prescaled.bias)
    assert not torch.allclose(weighted.weight, plain.weight)  # with Adam only the ratio of the two matters
    logged, scaled = _metrics(tmp_path / "weighted")[0], _metrics(tmp_path / "prescaled")[0]
    assert logged["abs_loss"] == pytest.approx(scaled["abs_loss"] / 3)
    assert logged["mse_loss"] == pytest.approx(scaled["mse_loss"])


def test_a_loss_weight_that_names_no_loss_stops_at_the_first_step(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"optim.loss_weights: no loss named itm; this task's losses: abs, mse"
    ):
        _fit_two_losses(tmp_path, 1.0, {"itm": 2.0})
