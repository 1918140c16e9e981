"""Model presets and task models are registered and listed by ``albef ls``."""

from __future__ import annotations

import pytest

from albef.cli.main import main
from albef.models import MODEL_PRESETS, TASK_MODELS, model_preset
from albef.registry import UnknownNameError
from tests.models import TASKS


def test_ls_models_lists_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "models"]) == 0
    out = capsys.readouterr().out
    for name in ("albef_base", "albef_tiny", "albef_synthetic"):
        assert name in out
    assert MODEL_PRESETS.describe("albef_base") in out


def test_ls_tasks_lists_every_task_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "tasks"]) == 0
    out = capsys.readouterr().out
    on_retrieval = ("grounding", "winoground", "sugarcrepe", "aro")
    assert set(TASK_MODELS.names()) == {*TASKS, *on_retrieval}
    for name in (*TASKS, *on_retrieval):
        assert name in out and TASK_MODELS.describe(name) in out
    # Grounding.py builds the retrieval model; the benchmarks score with its ITC features and ITM head
    for name in on_retrieval:
        assert TASK_MODELS.get(name) is TASK_MODELS.get("retrieval")


def test_unknown_preset_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="albef_tiny"):
        model_preset("albef_huge")


def test_tiny_preset_is_the_reference_size() -> None:
    cfg = model_preset("albef_tiny")
    assert (cfg.vision.image_res, cfg.vision.width, cfg.vision.depth) == (48, 32, 2)
    assert (cfg.text.hidden_size, cfg.text.num_layers, cfg.text.fusion_layer, cfg.text.vocab_size) == (
        32,
        12,
        6,
        1000,
    )
    assert (cfg.embed_dim, cfg.queue_size) == (16, 64)
