"""Task conversions: the official fixture replayed, teachers, same-task loads, resizing and errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from albef.checkpoint import (
    CheckpointMismatchError,
    detect_layout,
    load_checkpoint,
    official_to_ours,
    ours_to_official,
    save_state_dict,
)
from albef.config.schema import ModelConfig
from albef.models import create_model, model_preset
from albef.models.vision import resize_pos_embed
from albef.verification.conversions import ConversionCheck, check_official_conversions

FIXTURE_TASKS = {"pretrain": "pretrain", "retrieval": "retrieval", "vqa": "vqa", "nlvr": "nlvr", "ve": "ve"}


def tiny(**vision: Any) -> ModelConfig:
    cfg = model_preset("albef_tiny")
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, **vision)) if vision else cfg


@torch.no_grad()
def randomized(task: str, cfg: ModelConfig | None = None, seed: int = 1) -> nn.Module:
    """A tiny model whose every float tensor (teachers included) holds distinct random values."""
    torch.manual_seed(seed)
    model = create_model(task, cfg or tiny())
    seen: set[int] = set()
    for tensor in model.state_dict(keep_vars=True).values():
        if tensor.is_floating_point() and id(tensor) not in seen:
            seen.add(id(tensor))
            tensor.normal_()
    return model


def assert_module_equal(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def assert_module_differs(a: nn.Module, b: nn.Module) -> None:
    assert any(
        not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


# -- the official fixture -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrain_fixture(reference_dir: Path) -> dict[str, Any]:
    return torch.load(reference_dir / "official_tiny" / "pretrain.pt", weights_only=True)


@pytest.fixture(scope="module")
def conversion_checks(pretrain_fixture: dict[str, Any]) -> dict[str, ConversionCheck]:
    return {check.name: check for check in check_official_conversions(pretrain_fixture)}


@pytest.mark.parametrize("name", ["retrieval", "vqa", "ve", "pretrain_nlvr", "nlvr"])
def test_conversion_matches_official_fixture(
    conversion_checks: dict[str, ConversionCheck], name: str
) -> None:
    check = conversion_checks[name]
    assert check.keys_match, check.detail
    assert check.passed, check.detail
    assert check.max_abs_diff <= 1e-6
    assert check.detail.startswith("ok:")


def test_conversion_check_reports_a_wrong_fixture(pretrain_fixture: dict[str, Any]) -> None:
    broken = dict(pretrain_fixture)
    broken["conversions"] = {
        "ve": dict(pretrain_fixture["conversions"]["ve"], missing_keys=["cls_head.0.weight"])
    }
    (check,) = check_official_conversions(broken)
    assert check.name == "ve" and not check.keys_match and not check.passed
    assert "missing keys: ours only" in check.detail


@pytest.mark.parametrize("name", list(FIXTURE_TASKS))
def test_official_fixture_state_dicts_load_directly(reference_dir: Path, name: str) -> None:
    official = torch.load(reference_dir / "official_tiny" / f"{name}.pt", weights_only=True)["state_dict"]
    task = FIXTURE_TASKS[name]
    assert detect_layout(official) == f"official:{task}"
    model = create_model(task, tiny())
    report = load_checkpoint(model, task, {"model": official})
    assert report.conversion == "direct" and report.missing == [] and report.unexpected == []
    exported = ours_to_official(model.state_dict(), task)
    assert list(exported) == list(official)
    assert all(torch.equal(exported[k], v) for k, v in official.items())


# -- teachers -----------------------------------------------------------------------------------------------
def test_checkpoint_without_teachers_copies_them_after_loading() -> None:
    source = {
        k: v for k, v in randomized("pretrain").state_dict().items() if not k.split(".")[0].endswith("_m")
    }
    model = create_model("retrieval", tiny())
    report = load_checkpoint(model, "retrieval", source)
    assert report.conversion == "pretrain->retrieval"
    assert report.teachers_copied == ["visual_encoder", "vision_proj", "text_encoder", "text_proj"]
    assert "queue.idx_queue" in report.missing and "visual_encoder_m.cls_token" in report.missing
    assert set(report.unexpected) == {k for k in source if k.startswith("mlm_head.")}
    assert_module_equal(model.visual_encoder, model.visual_encoder_m)
    assert_module_equal(model.text_encoder, model.text_encoder_m)
    assert torch.equal(
        model.text_encoder.embeddings.word_embeddings.weight,
        source["text_encoder.embeddings.word_embeddings.weight"],
    )


@pytest.mark.parametrize("parity", [False, True])
def test_nlvr_teachers_from_loaded_weights_or_official_order(parity: bool) -> None:
    ta_state = randomized("nlvr_pretrain").state_dict()
    model = create_model("nlvr", tiny())
    fresh_teacher = {k: v.clone() for k, v in model.text_encoder_m.state_dict().items()}
    report = load_checkpoint(model, "nlvr", ta_state, parity=parity)
    assert report.conversion == "nlvr_pretrain->nlvr"
    assert set(report.unexpected) == {"temp", "vision_proj.weight", "vision_proj.bias", "text_proj.weight",
                                      "text_proj.bias", "ta_head.weight", "ta_head.bias"}  # fmt: skip
    assert torch.equal(model.text_encoder.encoder.layer[9].output.dense.weight,
                       ta_state["text_encoder.encoder.layer.9.output.dense.weight"])  # fmt: skip
    if parity:  # NLVR.py: copy_params() before load_state_dict -> teachers keep the pre-load weights
        assert (
            report.teachers_kept == ["visual_encoder", "text_encoder", "cls_head"]
            and not report.teachers_copied
        )
        assert all(torch.equal(v, fresh_teacher[k]) for k, v in model.text_encoder_m.state_dict().items())
        assert_module_differs(model.text_encoder, model.text_encoder_m)
    else:
        assert (
            report.teachers_copied == ["visual_encoder", "text_encoder", "cls_head"]
            and not report.teachers_kept
        )
        assert_module_equal(model.text_encoder, model.text_encoder_m)
        assert_module_equal(model.visual_encoder, model.visual_encoder_m)
    assert_module_equal(model.cls_head, model.cls_head_m)


def test_failed_parity_load_leaves_the_model_untouched() -> None:
    ta_state = dict(randomized("nlvr_pretrain").state_dict())
    del ta_state["text_encoder.encoder.layer.0.output.dense.bias"]
    model = create_model("nlvr", tiny())
    with torch.no_grad():
        model.visual_encoder.cls_token.add_(1)  # online != teacher: a premature copy_params() would show
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        CheckpointMismatchError, match=r"text_encoder\.encoder\.layer\.0\.output\.dense\.bias"
    ):
        load_checkpoint(model, "nlvr", ta_state, parity=True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_teachers_present_in_checkpoint_are_loaded() -> None:
    source = randomized("pretrain")
    model = create_model("ve", tiny())
    report = load_checkpoint(model, "ve", source.state_dict())
    assert report.teachers_copied == ["cls_head"]  # the only teacher the pretraining checkpoint lacks
    assert_module_equal(model.text_encoder_m, source.text_encoder_m)
    assert_module_differs(model.text_encoder, model.text_encoder_m)


def test_vqa_without_distill_ignores_teachers_with_a_note() -> None:
    model = create_model("vqa", dataclasses.replace(tiny(), distill=False))
    report = load_checkpoint(model, "vqa", randomized("pretrain").state_dict())
    assert "text_encoder_m.embeddings.word_embeddings.weight" in report.unexpected
    assert any("distill off" in note for note in report.notes)


# -- same task, resizing, formats ----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["official", "ours"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_finetuned_vqa_checkpoint_loads_without_remapping(tmp_path: Path, layout: str, suffix: str) -> None:
    trained = randomized("vqa")
    state = trained.state_dict()
    path = save_state_dict(
        ours_to_official(state, "vqa") if layout == "official" else state, tmp_path / f"vqa{suffix}"
    )
    model = create_model("vqa", tiny())
    report = load_checkpoint(model, "vqa", path)
    assert report.source_layout == f"{layout}:vqa" and report.conversion == "direct"
    assert report.missing == [] and report.unexpected == [] and report.teachers_copied == []
    assert_module_equal(model, trained)


def test_pos_embeds_resized_when_resolutions_differ() -> None:
    source = randomized("retrieval").state_dict()  # 48 px: 3x3 patches
    model = create_model("retrieval", tiny(image_res=64))  # 4x4 patches
    report = load_checkpoint(model, "retrieval", source)
    assert report.resized == [
        ("visual_encoder.pos_embed", (1, 10, 32), (1, 17, 32)),
        ("visual_encoder_m.pos_embed", (1, 10, 32), (1, 17, 32)),
    ]
    assert torch.equal(
        model.visual_encoder.pos_embed, resize_pos_embed(source["visual_encoder.pos_embed"], 16)
    )


def test_pretrain_checkpoint_into_pretrain_model_resizes_and_loads() -> None:
    source = randomized("pretrain")
    model = create_model("pretrain", tiny(image_res=64))
    report = load_checkpoint(model, "pretrain", ours_to_official(source.state_dict(), "pretrain"))
    assert report.conversion == "direct" and len(report.resized) == 2 and report.missing == []
    assert_module_equal(model.text_encoder_m, source.text_encoder_m)


def test_unsupported_conversion_lists_supported_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"no conversion from a retrieval checkpoint to a vqa model; supported: pretrain->retrieval",
    ):
        load_checkpoint(create_model("vqa", tiny()), "vqa", randomized("retrieval").state_dict())


def test_undocumented_missing_key_is_an_error() -> None:
    source = official_to_ours(ours_to_official(randomized("pretrain").state_dict(), "pretrain"))
    del source["itm_head.weight"]
    with pytest.raises(
        CheckpointMismatchError,
        match=r"state dict \(ours:pretrain\) does not fit the retrieval model:\n  missing keys \(1\):\n    itm_head.weight",
    ):
        load_checkpoint(create_model("retrieval", tiny()), "retrieval", source)


def test_shape_mismatch_names_key_and_shapes() -> None:
    source = randomized("pretrain").state_dict()
    model = create_model("retrieval", dataclasses.replace(tiny(), queue_size=128))
    with pytest.raises(
        CheckpointMismatchError, match=r"queue\.image_queue: checkpoint \(16, 64\) vs model \(16, 128\)"
    ):
        load_checkpoint(model, "retrieval", source)
