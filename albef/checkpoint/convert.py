"""One entry point for every ALBEF checkpoint: detect its layout, convert, resize, load strictly.

:func:`load_checkpoint` accepts an official file (``{'model': ...}`` or bare, with or without ``*_m``
teachers), one of ours, or a state dict; it recognises the checkpoint's class, applies the official conversion
to the target task (``albef.checkpoint.remap``) or none when the checkpoint already belongs to the target task
(the official VQA script would corrupt it, ALBEF#101), resizes ViT position embeddings to the model's grid,
and loads strictly: only the documented missing/unexpected keys are allowed, and they are reported.

EMA teachers absent from a checkpoint (``pretrain_model_nlvr.pth`` has none) are copied from the loaded
weights after loading. ``parity=True`` reproduces the official order instead (``copy_params()`` before
loading, so such teachers keep their pre-load values; spec §7 Q14).

:func:`check_official_conversions` replays every conversion recorded in the reference fixture
``official_tiny/pretrain.pt`` and compares values and key sets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from albef.checkpoint.io import read_state_dict, unwrap_state_dict
from albef.checkpoint.layout import (
    OFFICIAL,
    check_task,
    detect_layout,
    official_keys,
    official_to_ours,
    ours_to_official,
    split_layout,
    top_module,
)
from albef.checkpoint.remap import remap_state_dict
from albef.checkpoint.strict import LoadReport, check_state_dict, load_state_dict_strict
from albef.config.schema import ModelConfig, TextConfig, VisionConfig
from albef.errors import CheckpointError
from albef.models.builders import create_model
from albef.models.momentum import MOMENTUM_SUFFIX, copy_params
from albef.models.vision import resize_pos_embed

PathOrStateDict = str | os.PathLike[str] | Mapping[str, Any]


def teacher_names(model: nn.Module) -> list[str]:
    """Online modules of ``model`` that have a built EMA teacher (``<name>_m``), in momentum order."""
    names: Sequence[str] = getattr(model, "momentum_names", ())
    return [n for n in names if isinstance(getattr(model, n + MOMENTUM_SUFFIX, None), nn.Module)]


def resize_pos_embeds(
    state_dict: dict[str, Tensor], model: nn.Module
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """Resize, in ``state_dict``, every ViT ``pos_embed`` whose grid differs from the model's (bicubic).

    Only keys the model has are touched; a width mismatch is left for the strict load to report.

    Returns:
        ``(key, old_shape, new_shape)`` of each resized entry.
    """
    own = model.state_dict()
    resized = []
    for key in [k for k in state_dict if k.endswith(".pos_embed")]:
        target, value = own.get(key), state_dict[key]
        if target is None or value.shape == target.shape or value.shape[-1] != target.shape[-1]:
            continue
        extra = int(getattr(getattr(model, top_module(key)), "num_prefix_tokens", 1))
        state_dict[key] = resize_pos_embed(value, target.shape[1] - extra, extra)
        resized.append((key, tuple(value.shape), tuple(target.shape)))
    return resized


def _as_state_dict(source: PathOrStateDict) -> tuple[dict[str, Tensor], str]:
    """The state dict of a path or an in-memory checkpoint, and a name for messages."""
    if isinstance(source, (str, os.PathLike)):
        return read_state_dict(source), str(source)
    return unwrap_state_dict(source, "state dict"), "state dict"


def load_checkpoint(
    model: nn.Module, task: str, source: PathOrStateDict, *, parity: bool = False
) -> LoadReport:
    """Load any ALBEF checkpoint into a ``task`` model, converting it as the official scripts do.

    Args:
        model: The target model (``albef.models.create_model(task, cfg)``).
        task: The model's task.
        source: A file (``.pth``/``.pt``/``.safetensors``...) or a state dict / ``{'model': state_dict}``, in
            the official layout or ours, of the same task or of a task that converts to it.
        parity: Official teacher order: ``copy_params()`` before loading, so teachers absent from the
            checkpoint keep their pre-load values (NLVR.py). Default: copy them from the loaded weights after.

    Returns:
        A :class:`LoadReport` (our key names; ``official_keys`` expresses them officially).

    Raises:
        CheckpointMismatchError: Undocumented missing/unexpected keys or shape mismatches (listed).
        CheckpointError: Unknown layout, or no conversion from the checkpoint's task to ``task`` (naming the
            file).
    """
    state_dict, name = _as_state_dict(source)
    try:
        layout = detect_layout(state_dict)
        fmt, source_task = split_layout(layout)
        ours = official_to_ours(state_dict) if fmt == OFFICIAL else state_dict
        fusion_layer = int(getattr(getattr(model, "text_encoder", None), "fusion_layer", 0))
        remap = remap_state_dict(ours, source_task, check_task(task), fusion_layer)
    except CheckpointError:
        raise
    except ValueError as err:  # an unknown layout, or a task it cannot be converted to
        raise CheckpointError(f"{name}: {err}") from err
    resized = resize_pos_embeds(remap.state_dict, model)
    teachers = teacher_names(model)
    present = {top_module(k) for k in remap.state_dict}
    absent = [t for t in teachers if t + MOMENTUM_SUFFIX not in present]
    unbuilt = sorted(m for m in present if m.endswith(MOMENTUM_SUFFIX) and not hasattr(model, m))
    allowed = {
        "expected_missing": remap.expected_missing + tuple(f"{t}{MOMENTUM_SUFFIX}.*" for t in absent),
        "expected_unexpected": remap.expected_unexpected + tuple(f"{m}.*" for m in unbuilt),
    }
    context = f"{name} ({layout}) does not fit the {task} model"
    check_state_dict(model, remap.state_dict, **allowed, context=context)  # fail before touching the model
    if parity and teachers:
        copy_params(model, teachers)
    report = load_state_dict_strict(model, remap.state_dict, **allowed, context=context)
    report.source_layout, report.resized = layout, resized
    report.conversion = "direct" if source_task == task else f"{source_task}->{task}"
    report.notes.append(remap.note)
    if unbuilt:
        report.notes.append(
            f"teachers not built by this model (distill off) were ignored: {', '.join(unbuilt)}"
        )
    _finish_teachers(model, report, absent, parity)
    return report


def _finish_teachers(model: nn.Module, report: LoadReport, absent: list[str], parity: bool) -> None:
    """Teachers absent from the checkpoint: copy them from the loaded weights, or (parity) leave them."""
    if not absent:
        return
    if parity:
        report.teachers_kept = absent
        report.notes.append(
            "parity: teachers absent from the checkpoint keep their pre-load values (NLVR.py)"
        )
        return
    copy_params(model, absent)
    report.teachers_copied = absent
    report.notes.append("teachers absent from the checkpoint were copied from the loaded weights")


# -- replaying the reference fixture ------------------------------------------------------------------------
_FIXTURE_CONVERSIONS = (
    ("retrieval", "retrieval"),
    ("vqa", "vqa"),
    ("ve", "ve"),
    ("pretrain_nlvr", "nlvr_pretrain"),
    ("nlvr", "nlvr"),
)
"""``pretrain.pt['conversions']`` entry -> our task."""
POS_EMBED_ATOL = 1e-6


@dataclass
class ConversionCheck:
    """One official conversion replayed against the fixture.

    Attributes:
        name: The fixture entry (``retrieval``, ``vqa``, ``ve``, ``pretrain_nlvr``, ``nlvr``).
        max_abs_diff: Largest difference over the recorded tensors (``pos_embed`` may differ by 1e-6).
        keys_match: Loaded, missing and unexpected key sets (official names) equal the recorded ones.
        passed: ``keys_match`` and every tensor equal (``pos_embed`` within 1e-6).
        detail: ``ok: ...`` counts, or what differed.
    """

    name: str
    max_abs_diff: float
    keys_match: bool
    passed: bool
    detail: str


def model_config_from_official(config: Mapping[str, Any]) -> ModelConfig:
    """Our :class:`ModelConfig` from an official-style config dict (a fixture's ``config``).

    Reads ``image_res``, ``embed_dim``, ``temp``, ``queue_size``, ``momentum``, ``distill``, the ViT sizes
    under ``vit`` (default ViT-B/16) and the BERT config under ``bert_config``.
    """
    bert, vit = config["bert_config"], config.get("vit", {})
    vision = VisionConfig(
        image_res=int(config["image_res"]),
        patch_size=int(vit.get("patch_size", 16)),
        width=int(vit.get("embed_dim", config.get("vision_width", 768))),
        depth=int(vit.get("depth", 12)),
        num_heads=int(vit.get("num_heads", 12)),
        mlp_ratio=float(vit.get("mlp_ratio", 4.0)),
        qkv_bias=bool(vit.get("qkv_bias", True)),
        layer_norm_eps=float(vit.get("ln_eps", 1e-6)),
    )
    text = TextConfig(
        vocab_size=int(bert["vocab_size"]),
        hidden_size=int(bert["hidden_size"]),
        num_layers=int(bert["num_hidden_layers"]),
        num_heads=int(bert["num_attention_heads"]),
        intermediate_size=int(bert["intermediate_size"]),
        fusion_layer=int(bert["fusion_layer"]),
        encoder_width=int(bert["encoder_width"]),
        max_position_embeddings=int(bert["max_position_embeddings"]),
        type_vocab_size=int(bert.get("type_vocab_size", 2)),
        layer_norm_eps=float(bert.get("layer_norm_eps", 1e-12)),
        pad_token_id=int(bert.get("pad_token_id", 0)),
        hidden_dropout=float(bert.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(bert.get("attention_probs_dropout_prob", 0.1)),
    )
    return ModelConfig(
        vision=vision,
        text=text,
        embed_dim=int(config["embed_dim"]),
        temp=float(config.get("temp", 0.07)),
        queue_size=int(config["queue_size"]),
        momentum=float(config.get("momentum", 0.995)),
        alpha=float(config.get("alpha", 0.4)),
        distill=bool(config.get("distill", True)),
        mlm_probability=float(config.get("mlm_probability", 0.15)),
    )


def _key_set_problems(what: str, ours: set[str], official: set[str]) -> list[str]:
    if ours == official:
        return []
    return [
        f"{what}: ours only {sorted(ours - official)[:3]} ({len(ours - official)}), "
        f"official only {sorted(official - ours)[:3]} ({len(official - ours)})"
    ]


def _compare(
    name: str, task: str, model: nn.Module, report: LoadReport, entry: Mapping[str, Any]
) -> ConversionCheck:
    """Our converted model, exported to official names, against one fixture entry."""
    exported = ours_to_official(model.state_dict(), task)
    reference: Mapping[str, Tensor] = entry["state_dict"]
    missing, unexpected = (
        set(official_keys(report.missing, task)),
        set(official_keys(report.unexpected, task)),
    )
    problems = _key_set_problems("missing keys", missing, set(entry["missing_keys"]))
    problems += _key_set_problems("unexpected keys", unexpected, set(entry["unexpected_keys"]))
    problems += _key_set_problems("loaded keys", {k for k in exported if k not in missing}, set(reference))
    keys_match = not problems
    max_diff = 0.0
    for key, ref in reference.items():
        mine = exported.get(key)
        if mine is None:
            continue
        if mine.shape != ref.shape or mine.dtype != ref.dtype:
            problems.append(f"{key}: ours {tuple(mine.shape)} {mine.dtype} vs {tuple(ref.shape)} {ref.dtype}")
            continue
        diff = float((mine.double() - ref.double()).abs().max()) if ref.numel() else 0.0
        max_diff = max(max_diff, diff)
        if diff > (POS_EMBED_ATOL if key.endswith("pos_embed") else 0.0):
            problems.append(f"{key}: max abs diff {diff:.3g}")
    detail = (
        f"ok: {len(reference)} tensors equal, {len(missing)} missing, {len(unexpected)} unexpected"
        if not problems
        else "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
    )
    return ConversionCheck(name, max_diff, keys_match, not problems, detail)


def _fixture_source(fixture: Mapping[str, Any], name: str) -> dict[str, Tensor]:
    """The state dict a recorded conversion started from."""
    if name != "nlvr":
        return dict(fixture["pretrain_checkpoint"])
    # NLVR.py loaded what Pretrain_nlvr.py saves: the TA model's state dict, ta_head included.
    source = dict(fixture["conversions"]["pretrain_nlvr"]["state_dict"])
    hidden = int(fixture["config"]["bert_config"]["hidden_size"])
    source.update({"ta_head.weight": torch.zeros(3, hidden), "ta_head.bias": torch.zeros(3)})
    return source


def check_official_conversions(pretrain_fixture: Mapping[str, Any]) -> list[ConversionCheck]:
    """Replay every conversion of ``official_tiny/pretrain.pt`` and compare with the recorded result.

    For each entry of ``pretrain_fixture['conversions']``: build our model of that task from
    ``conversion_configs`` (e.g. retrieval at 64 px), :func:`load_checkpoint` the recorded source, export
    to official names and compare values (exact; ``pos_embed`` within 1e-6) and the loaded / missing /
    unexpected key sets. The global RNG is left untouched.

    Args:
        pretrain_fixture: ``torch.load('.../official_tiny/pretrain.pt', weights_only=True)``.

    Returns:
        One :class:`ConversionCheck` per recorded conversion (failures carry the error in ``detail``).
    """
    recorded = pretrain_fixture.get("conversions", {})
    checks = []
    for name, task in _FIXTURE_CONVERSIONS:
        if name not in recorded:
            continue
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = create_model(
                    task, model_config_from_official(pretrain_fixture["conversion_configs"][name])
                )
            report = load_checkpoint(model, task, _fixture_source(pretrain_fixture, name))
            checks.append(_compare(name, task, model, report, recorded[name]))
        except Exception as err:  # a row per conversion: report the failure instead of aborting the table
            checks.append(ConversionCheck(name, float("nan"), False, False, f"{type(err).__name__}: {err}"))
    checks += [
        ConversionCheck(n, float("nan"), False, False, "no replay defined for this conversion")
        for n in recorded
        if n not in dict(_FIXTURE_CONVERSIONS)
    ]
    return checks
