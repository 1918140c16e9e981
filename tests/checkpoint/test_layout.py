"""Key maps ours <-> official for every class, the exact official key order, and layout detection."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import timm.layers
import torch

from albef.checkpoint import (
    detect_layout,
    official_key,
    official_keys,
    official_to_ours,
    ours_key,
    ours_to_official,
    split_layout,
)
from albef.config.schema import ModelConfig
from albef.models import create_model, model_preset

# (official class in the layout JSON, our task, image_res of the official class)
CLASSES = [
    ("pretrain", "pretrain", 256),
    ("retrieval", "retrieval", 384),
    ("vqa", "vqa", 384),
    ("nlvr", "nlvr", 384),
    ("pretrain_nlvr", "nlvr_pretrain", 256),
    ("ve", "ve", 384),
]
TASKS = [task for _, task, _ in CLASSES]


def base_config(image_res: int) -> ModelConfig:
    cfg = model_preset("albef_base")
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, image_res=image_res))


@pytest.fixture(scope="module")
def official_layout(reference_dir: Path) -> dict[str, dict[str, Any]]:
    return json.loads((reference_dir / "albef_official_state_dict_layout.json").read_text())


def json_state_dict(entries: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Meta tensors of the listed shapes/dtypes; ``position_ids`` are real aranges (they get validated)."""
    out = {}
    for key, (shape, dtype) in entries.items():
        if key.endswith("position_ids"):
            out[key] = torch.arange(shape[-1]).unsqueeze(0)
        else:
            out[key] = torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
    return out


@pytest.mark.parametrize(("official_class", "task", "res"), CLASSES)
@pytest.mark.skipif(
    not hasattr(timm.layers, "calculate_drop_path_rates"),
    reason="building a full-size model on the meta device needs timm >= 1.0.22 (older ViTs call .item() on a "
    "meta tensor while building); the export itself is covered at tiny size by the reference checks",
)
def test_export_has_exact_official_keys_order_shapes_dtypes(
    official_layout: dict[str, dict[str, Any]], official_class: str, task: str, res: int
) -> None:
    with torch.device("meta"):
        model = create_model(task, base_config(res))
    exported = ours_to_official(model.state_dict(), task)
    expected = official_layout[official_class]
    assert list(exported) == list(expected)
    for key, (shape, dtype) in expected.items():
        assert list(exported[key].shape) == shape, key
        assert str(exported[key].dtype) == f"torch.{dtype}", key


@pytest.mark.parametrize(("official_class", "task", "res"), CLASSES)
def test_detects_every_official_class_and_ours(
    official_layout: dict[str, dict[str, Any]], official_class: str, task: str, res: int
) -> None:
    official = json_state_dict(official_layout[official_class])
    assert detect_layout(official) == f"official:{task}"
    ours = official_to_ours(official, task)
    assert not any(k.endswith("position_ids") for k in ours)
    assert detect_layout(ours) == f"ours:{task}"  # NLVR²/TA/VE: no markers left, same names as ours
    # Without teachers (refcoco.pth, pretrain_model_nlvr.pth) the class is still recognised.
    no_teachers = {k: v for k, v in official.items() if not k.split(".")[0].endswith("_m")}
    assert detect_layout(no_teachers) == f"official:{task}"


@pytest.mark.parametrize("task", TASKS)
def test_round_trip_ours_official_ours_is_exact(task: str) -> None:
    torch.manual_seed(0)
    model = create_model(task, model_preset("albef_tiny"))
    ours = model.state_dict()
    official = ours_to_official(ours, task)
    back = official_to_ours(official, task)
    assert set(back) == set(ours)
    for key, value in ours.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    if task not in ("pretrain", "retrieval"):  # officially the queues come first and teachers interleave
        assert list(back) == list(ours)
    positions = [k for k in official if k.endswith("position_ids")]
    assert positions and all(torch.equal(official[k][0], torch.arange(64)) for k in positions)


def test_key_maps_by_example() -> None:
    assert official_key("text_encoder.encoder.layer.3.attention.self.query.weight", "pretrain") == (
        "text_encoder.bert.encoder.layer.3.attention.self.query.weight"
    )
    assert official_key("text_encoder_m.embeddings.LayerNorm.bias", "retrieval") == (
        "text_encoder_m.embeddings.LayerNorm.bias"
    )
    assert official_key("mlm_head_m.transform.dense.weight", "pretrain") == (
        "text_encoder_m.cls.predictions.transform.dense.weight"
    )
    assert official_key("mlm_head.bias", "retrieval") == "text_encoder.cls.predictions.bias"
    assert official_key("lm_head.decoder.bias", "vqa") == "text_decoder.cls.predictions.decoder.bias"
    assert official_key("text_decoder_m.encoder.layer.0.output.dense.bias", "vqa") == (
        "text_decoder_m.bert.encoder.layer.0.output.dense.bias"
    )
    assert official_key("queue.idx_queue", "retrieval") == "idx_queue"
    assert official_key("cls_head.2.weight", "nlvr") == "cls_head.2.weight"
    assert ours_key("text_decoder.cls.predictions.bias") == "lm_head.bias"
    assert ours_key("text_encoder_m.bert.embeddings.position_ids") is None
    assert ours_key("queue_ptr") == "queue.queue_ptr"
    # A key list gains the position_ids of every listed embedding.
    assert official_keys(["text_encoder_m.embeddings.word_embeddings.weight"], "nlvr") == [
        "text_encoder_m.embeddings.position_ids",
        "text_encoder_m.embeddings.word_embeddings.weight",
    ]
    assert split_layout("official:vqa") == ("official", "vqa")


def test_detection_rules_and_errors() -> None:
    t = torch.zeros(1)
    assert detect_layout({"text_encoder.bert.embeddings.word_embeddings.weight": t}) == "official:pretrain"
    assert detect_layout({"mlm_head.bias": t, "text_encoder.embeddings.word_embeddings.weight": t}) == (
        "ours:pretrain"
    )
    assert detect_layout({"itm_head.weight": t, "queue.idx_queue": t}) == "ours:retrieval"
    assert detect_layout({"cls_head.2.weight": torch.zeros(3, 4)}) == "ours:ve"
    with pytest.raises(ValueError, match=r"unknown checkpoint layout.*\['blocks', 'head'\]"):
        detect_layout({"blocks.0.weight": t, "head.weight": t})
    with pytest.raises(ValueError, match="mixes official keys"):
        detect_layout({"text_encoder.bert.embeddings.x": t, "mlm_head.bias": t})
    with pytest.raises(ValueError, match="5 output classes"):
        detect_layout({"cls_head.2.weight": torch.zeros(5, 4)})
    with pytest.raises(ValueError, match="unknown task 'captioning'"):
        ours_to_official({}, "captioning")
    # Grounding.py's model is the retrieval model: the same official layout
    state = {"itm_head.weight": t, "temp": t}
    assert list(ours_to_official(state, "grounding")) == list(ours_to_official(state, "retrieval"))


def test_layout_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"text_encoder\.embeddings\.position_ids' is not the arange"):
        official_to_ours({"text_encoder.embeddings.position_ids": torch.arange(4).flip(0)[None]})
    with pytest.raises(ValueError, match=r"retrieval class has no module\(s\) \['mlm_head'\]"):
        ours_to_official({"mlm_head.bias": torch.zeros(2), "temp": torch.tensor(0.1)}, "retrieval")
    with pytest.raises(ValueError, match=r"both map to 'mlm_head\.bias'"):
        official_to_ours(
            {"text_encoder.cls.predictions.bias": torch.zeros(1), "mlm_head.bias": torch.zeros(1)}
        )
