"""Key maps between the official ALBEF state-dict layouts and ours, and layout detection.

Our modules carry the official names (``visual_encoder``, ``text_encoder``, ``itm_head``, ``cls_head``, ...),
so the two layouts differ only in a few prefixes:

=======================================================  ===========================================
official                                                 ours
=======================================================  ===========================================
``P.embeddings.position_ids`` (int64 arange buffer)      (none: positions are computed)
``text_encoder[_m].bert.X`` (pretraining class)          ``text_encoder[_m].X``
``text_encoder[_m].cls.predictions.X``                   ``mlm_head[_m].X``
``text_decoder[_m].bert.X`` (VQA class)                  ``text_decoder[_m].X``
``text_decoder[_m].cls.predictions.X``                   ``lm_head[_m].X``
``image_queue``, ``text_queue``, ``idx_queue``,          ``queue.image_queue``, ... (one module)
``queue_ptr``
=======================================================  ===========================================

Everything else (ViT, projections, ``itm_head``, ``temp``, ``cls_head``, ``ta_head``, the BERT stacks of the
retrieval/NLVR²/VE classes) has identical names. The official-to-ours direction does not depend on the task;
ours-to-official needs it to know which stacks are ``BertFor*`` models (``bert.`` level) and the official
module order. Task names are ours (``nlvr_pretrain`` is the official ``pretrain_nlvr`` class).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import get_args

import torch
from torch import Tensor

from albef.config.schema import Task

TASKS: tuple[str, ...] = get_args(Task)
"""Our task names (``ExperimentConfig.task``), one per official model class."""

OFFICIAL_CLASS = {
    "pretrain": "pretrain",
    "retrieval": "retrieval",
    "vqa": "vqa",
    "nlvr": "nlvr",
    "nlvr_pretrain": "pretrain_nlvr",
    "ve": "ve",
    "grounding": "retrieval",
    "winoground": "retrieval",
    "sugarcrepe": "retrieval",
    "aro": "retrieval",
}
"""Our task name -> the official class name used in ``albef_official_state_dict_layout.json``."""

OFFICIAL, OURS = "official", "ours"
QUEUE_BUFFERS = ("image_queue", "text_queue", "idx_queue", "queue_ptr")
POSITION_IDS = "embeddings.position_ids"
_HEADS = {"mlm_head": "text_encoder", "lm_head": "text_decoder"}
"""Our prediction head -> the official BERT model that owns it as ``cls.predictions``."""
_LM_STACKS = {"pretrain": ("text_encoder",), "vqa": ("text_decoder",)}
"""Stacks that are official ``BertForMaskedLM``/``BertLMHeadModel`` models (their keys carry ``bert.``)."""

_MODULE_ORDER = {
    "pretrain": (
        "temp", "queue", "visual_encoder", "text_encoder", "mlm_head", "vision_proj", "text_proj", "itm_head",
        "visual_encoder_m", "vision_proj_m", "text_encoder_m", "mlm_head_m", "text_proj_m",
    ),
    "retrieval": (
        "temp", "queue", "visual_encoder", "text_encoder", "vision_proj", "text_proj", "itm_head",
        "visual_encoder_m", "vision_proj_m", "text_encoder_m", "text_proj_m",
    ),
    "vqa": (
        "visual_encoder", "text_encoder", "text_decoder", "lm_head",
        "visual_encoder_m", "text_encoder_m", "text_decoder_m", "lm_head_m",
    ),
    "nlvr": ("visual_encoder", "text_encoder", "cls_head", "visual_encoder_m", "text_encoder_m", "cls_head_m"),
    "nlvr_pretrain": ("temp", "visual_encoder", "text_encoder", "vision_proj", "text_proj", "ta_head"),
    "ve": ("visual_encoder", "text_encoder", "cls_head", "visual_encoder_m", "text_encoder_m", "cls_head_m"),
}  # fmt: skip
"""Top-level modules of each official class in its registration (= state-dict) order, in our names."""
for _name in ("grounding", "winoground", "sugarcrepe", "aro"):  # tasks run on the retrieval model
    _MODULE_ORDER[_name] = _MODULE_ORDER["retrieval"]

_OFFICIAL_HEAD = re.compile(r"^(text_encoder|text_decoder)(_m)?\.cls\.predictions\.")
_OFFICIAL_BERT = re.compile(r"^(text_encoder|text_decoder)(_m)?\.bert\.")


def check_task(task: str) -> str:
    """Return ``task`` if it is a known task name, else raise ``ValueError`` listing the valid ones."""
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'; valid tasks: {', '.join(TASKS)}")
    return task


def top_module(key: str) -> str:
    """The top-level module (or root tensor) of one of our keys: ``'text_encoder'``, ``'temp'``, ..."""
    return key.split(".", 1)[0]


# -- official -> ours ---------------------------------------------------------------------------------------
def ours_key(key: str) -> str | None:
    """Our name of one official key; ``None`` for a ``position_ids`` buffer (we have none)."""
    if key.endswith(POSITION_IDS):
        return None
    if key in QUEUE_BUFFERS:
        return "queue." + key
    head = _OFFICIAL_HEAD.match(key)
    if head:
        owner = "mlm_head" if head.group(1) == "text_encoder" else "lm_head"
        return owner + (head.group(2) or "") + "." + key[head.end() :]
    return _OFFICIAL_BERT.sub(lambda m: m.group(1) + (m.group(2) or "") + ".", key, count=1)


def check_position_ids(key: str, value: Tensor) -> None:
    """Raise ``ValueError`` unless a ``position_ids`` buffer is ``arange`` of shape (1, P) (what we assume)."""
    expected = torch.arange(value.shape[-1]).unsqueeze(0)
    if (
        value.dtype.is_floating_point
        or value.shape != expected.shape
        or not torch.equal(value.cpu(), expected)
    ):
        raise ValueError(
            f"'{key}' is not the arange(0, P) buffer of shape (1, P) that BERT uses "
            f"(got shape {tuple(value.shape)}, dtype {value.dtype}); this checkpoint's positions cannot be mapped"
        )


def official_to_ours(state_dict: Mapping[str, Tensor], task: str | None = None) -> dict[str, Tensor]:
    """Rename an official state dict (any class) to our layout.

    ``position_ids`` buffers are checked to be ``arange`` and dropped. Keys already in our layout pass
    through unchanged, so the function is idempotent. The tensors are not copied.

    Args:
        state_dict: Official keys -> tensors.
        task: Optional task name, only validated (the renaming is the same for every class).

    Returns:
        Our keys -> the same tensors, in the input order.
    """
    if task is not None:
        check_task(task)
    ours: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = ours_key(key)
        if new is None:
            check_position_ids(key, value)
            continue
        if new in ours:
            raise ValueError(f"'{key}' and another key both map to '{new}'; the state dict mixes layouts")
        ours[new] = value
    return ours


# -- ours -> official ---------------------------------------------------------------------------------------
def official_key(key: str, task: str) -> str:
    """The official name of one of our keys in the official class of ``task``.

    Our prediction heads always map to ``<owner>.cls.predictions.*``, also in tasks without them (e.g. the
    MLM heads a retrieval conversion reports as unexpected are ``text_encoder.cls.predictions.*``).
    """
    module, _, rest = key.partition(".")
    if module == "queue" and rest in QUEUE_BUFFERS:
        return rest
    base, suffix = (module[:-2], "_m") if module.endswith("_m") else (module, "")
    if base in _HEADS:
        return f"{_HEADS[base]}{suffix}.cls.predictions.{rest}"
    if base in _LM_STACKS.get(check_task(task), ()):
        return f"{module}.bert.{rest}"
    return key


def _position_ids_key(word_key: str, task: str) -> str | None:
    """The official ``position_ids`` key that precedes a ``*.embeddings.word_embeddings.weight`` key."""
    if not word_key.endswith("embeddings.word_embeddings.weight"):
        return None
    return official_key(word_key, task).removesuffix("word_embeddings.weight") + "position_ids"


def official_keys(keys: Iterable[str], task: str) -> list[str]:
    """Official names of a list of our keys, with the ``position_ids`` buffer of every listed embedding.

    Use it to express a key list (e.g. a load report's missing or unexpected keys) in official names: a
    missing or unexpected BERT embedding implies a missing or unexpected ``position_ids`` officially.
    """
    out: list[str] = []
    for key in keys:
        pos = _position_ids_key(key, task)
        if pos is not None:
            out.append(pos)
        out.append(official_key(key, task))
    return out


def ours_to_official(
    state_dict: Mapping[str, Tensor], task: str, max_positions: int | None = None
) -> dict[str, Tensor]:
    """Export one of our state dicts to the official layout of ``task``'s class, in the official order.

    Adds an ``arange`` ``position_ids`` buffer (1, P) to every BERT embedding, restores the ``bert.`` and
    ``cls.predictions.`` levels and the top-level queues, and keeps both keys of shared tensors (the tied
    MLM decoder, NLVR²'s shared key/value). Tensors are not copied.

    Args:
        state_dict: Our keys -> tensors (e.g. ``model.state_dict()``).
        task: Target class (our task name).
        max_positions: Length P of ``position_ids``; by default the rows of the stack's
            ``position_embeddings`` (always equal in the official code).

    Returns:
        Official keys -> tensors, ordered as the official ``state_dict()``.

    Raises:
        ValueError: Unknown task, or a top-level module the official class does not have.
    """
    order = _MODULE_ORDER[check_task(task)]
    groups: dict[str, list[str]] = {name: [] for name in order}
    for key in state_dict:
        groups.setdefault(top_module(key), []).append(key)
    foreign = [name for name in groups if name not in order]
    if foreign:
        raise ValueError(
            f"the official {OFFICIAL_CLASS[task]} class has no module(s) {foreign}; "
            f"it has: {', '.join(order)}"
        )
    out: dict[str, Tensor] = {}
    for key in (k for name in order for k in groups[name]):
        pos = _position_ids_key(key, task)
        if pos is not None:
            rows = max_positions
            if rows is None:
                rows = state_dict[key.replace("word_embeddings", "position_embeddings")].shape[0]
            out[pos] = torch.arange(rows, device=state_dict[key].device).unsqueeze(0)
        out[official_key(key, task)] = state_dict[key]
    return out


# -- detection ---------------------------------------------------------------------------------------------
def layout_format(keys: Iterable[str]) -> str:
    """``'official'`` or ``'ours'`` for a key set; keys without markers (e.g. a VE dict) count as ours.

    Raises:
        ValueError: Both official and our markers are present (a mixed dict).
    """
    keys = list(keys)
    official = [k for k in keys if k.endswith(POSITION_IDS) or k in QUEUE_BUFFERS or _OFFICIAL_BERT.match(k)]
    official += [k for k in keys if _OFFICIAL_HEAD.match(k)]
    ours = [k for k in keys if top_module(k) in ("queue", *_HEADS, *(h + "_m" for h in _HEADS))]
    if official and ours:
        raise ValueError(f"the state dict mixes official keys ({official[0]}) and ours ({ours[0]})")
    return OFFICIAL if official else OURS


def _classifier_task(state_dict: Mapping[str, Tensor]) -> str:
    """NLVR² (2 classes) or SNLI-VE (3 classes), from the output layer of ``cls_head``."""
    out = state_dict.get("cls_head.2.weight")
    classes = None if out is None else int(out.shape[0])
    if classes == 2:
        return "nlvr"
    if classes == 3:
        return "ve"
    raise ValueError(f"cls_head.2.weight has {classes} output classes: neither NLVR² (2) nor SNLI-VE (3)")


def detect_task(state_dict: Mapping[str, Tensor]) -> str:
    """The task (model class) of a state dict in either layout.

    Rules: ``text_decoder`` => vqa; ``ta_head`` => nlvr_pretrain; an MLM head (``text_encoder.bert.``,
    ``text_encoder.cls.``, ``mlm_head``) => pretrain; ``cls_head`` => nlvr (2 classes) or ve (3);
    ``itm_head`` => retrieval (also the grounding class).

    Raises:
        ValueError: None of the rules applies (the message lists the top-level modules).
    """
    modules = {top_module(k) for k in state_dict}
    if "text_decoder" in modules:
        return "vqa"
    if "ta_head" in modules:
        return "nlvr_pretrain"
    if "mlm_head" in modules or any(
        k.startswith(("text_encoder.bert.", "text_encoder.cls.")) for k in state_dict
    ):
        return "pretrain"
    if "cls_head" in modules:
        return _classifier_task(state_dict)
    if "itm_head" in modules:
        return "retrieval"
    raise ValueError(
        "unknown checkpoint layout: no text_decoder, ta_head, MLM head, cls_head or itm_head among the "
        f"top-level modules {sorted(modules)}"
    )


def detect_layout(state_dict: Mapping[str, Tensor]) -> str:
    """Which layout and class a state dict is, as ``'<format>:<task>'``, e.g. ``'official:pretrain'``.

    ``format`` is ``official`` or ``ours`` (:func:`layout_format`); ``task`` is our task name
    (:func:`detect_task`; the official ``pretrain_nlvr`` class is ``nlvr_pretrain``).
    """
    return f"{layout_format(state_dict)}:{detect_task(state_dict)}"


def split_layout(layout: str) -> tuple[str, str]:
    """``'official:vqa'`` -> ``('official', 'vqa')``."""
    fmt, _, task = layout.partition(":")
    if fmt not in (OFFICIAL, OURS):
        raise ValueError(f"not a layout name: '{layout}' (expected '<official|ours>:<task>')")
    return fmt, check_task(task)
