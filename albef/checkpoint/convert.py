"""One entry point for every ALBEF checkpoint: detect its layout, convert, resize, load strictly.

:func:`load_checkpoint` accepts an official file (``{'model': ...}`` or bare, with or without ``*_m``
teachers), one of ours, or a state dict; it recognises the checkpoint's class, applies the official conversion
to the target task (``albef.checkpoint.remap``) or none when the checkpoint already belongs to the target task
(the official VQA script would corrupt it, ALBEF#101), resizes ViT position embeddings to the model's grid,
and loads strictly: only the documented missing/unexpected keys are allowed, and they are reported.

EMA teachers absent from a checkpoint (``pretrain_model_nlvr.pth`` has none, nor the bare ``refcoco.pth``) are
copied from the loaded weights after loading; feature queues absent from it (``refcoco.pth``) keep their fresh
initialisation. ``parity=True`` reproduces the official order instead (``copy_params()`` before
loading, so such teachers keep their pre-load values; spec §7 Q14).

The replay of the official conversions recorded in the reference fixtures lives in
``albef.verification.conversions``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from albef.checkpoint.io import read_state_dict, unwrap_state_dict
from albef.checkpoint.layout import (
    OFFICIAL,
    check_task,
    detect_layout,
    official_to_ours,
    split_layout,
    top_module,
)
from albef.checkpoint.remap import remap_state_dict
from albef.checkpoint.strict import LoadReport, check_state_dict, load_state_dict_strict
from albef.errors import CheckpointError
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
    # A bare released file (refcoco.pth, ALBEF#50) has no feature queues either: they are training state,
    # so the model keeps its freshly initialised ones.
    queues_absent = "queue" not in present and any(k.startswith("queue.") for k in model.state_dict())
    allowed = {
        "expected_missing": remap.expected_missing
        + tuple(f"{t}{MOMENTUM_SUFFIX}.*" for t in absent)
        + (("queue.*",) if queues_absent else ()),
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
    if queues_absent:
        report.notes.append("the checkpoint has no feature queues: the model keeps freshly initialised ones")
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
