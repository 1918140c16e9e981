"""Training records beyond ``metrics.jsonl``: TensorBoard scalars written by a real run and read back, and the
config keys that ask for them (TensorBoard, Weights & Biases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from albef.cli.main import main
from albef.config import load_config
from albef.engine.run_folder import IDENTITY_EXEMPT
from tests.engine import pretrain_argv, small_world


def test_a_run_with_tensorboard_writes_every_record_as_scalars(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    world = small_world(tmp_path_factory)
    run = tmp_path_factory.mktemp("tb") / "run"
    assert main([*pretrain_argv(world, run, "runtime.tensorboard=true"), "--max-steps", "4"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    events = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"itc_loss", "itm_loss", "mlm_loss", "loss", "lr", "samples_per_s"} <= tags
    assert "step" not in tags and "epoch" not in tags
    for tag in ("itm_loss", "lr"):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2, 3, 4]
        assert [s.value for s in scalars] == pytest.approx([r[tag] for r in records], rel=1e-6)


def test_the_sink_keys_do_not_change_a_run_s_identity_and_need_their_packages(tmp_path: Path) -> None:
    assert {"runtime.tensorboard", "runtime.wandb_project"} <= set(IDENTITY_EXEMPT)
    cfg = load_config("synthetic_pretrain", ["runtime.wandb_project=albef-test"])
    assert cfg.runtime.wandb_project == "albef-test" and cfg.runtime.tensorboard is False
    try:
        import wandb  # noqa: F401
    except ImportError:
        from albef.engine.metrics_log import WandbSink
        from albef.errors import ConfigError

        with pytest.raises(ConfigError, match="pip install wandb"):
            WandbSink("albef-test", tmp_path, {})
