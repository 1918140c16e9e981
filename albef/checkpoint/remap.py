"""The official checkpoint conversions between task models, as pure functions on our layout.

Each function reproduces the ``if args.checkpoint:`` block of an official finetuning script (spec §3.3) on a
state dict already renamed to our layout, and returns a :class:`Remap`: the state dict in the target
model's layout plus the documented keys the target may miss or leave over. Those sets equal the
``missing_keys`` / ``unexpected_keys`` the official ``load_state_dict(strict=False)`` reports.
Position-embedding resizing and EMA teachers are handled by ``albef.checkpoint.convert``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor

_LAYER = re.compile(r"^(text_encoder(?:_m)?)\.encoder\.layer\.(\d+)\.(.+)$")
_EMBEDDINGS = re.compile(r"^(text_encoder(?:_m)?)\.(embeddings\..+)$")

CONTRASTIVE_ONLY = (
    "temp",
    "queue.*",
    "vision_proj.*",
    "text_proj.*",
    "itm_head.*",
    "vision_proj_m.*",
    "text_proj_m.*",
)
"""Pretraining parts that the VQA / SNLI-VE models do not have."""
MLM_HEADS = ("mlm_head.*", "mlm_head_m.*")


@dataclass
class Remap:
    """A state dict mapped onto a target model, with its documented leftovers.

    Attributes:
        state_dict: Our layout of the target model (plus any keys it will not use).
        expected_missing: Globs of target keys the checkpoint does not provide.
        expected_unexpected: Globs of keys the target model does not have.
        note: What was done, for the report.
    """

    state_dict: dict[str, Tensor]
    expected_missing: tuple[str, ...] = ()
    expected_unexpected: tuple[str, ...] = ()
    note: str = ""


def pretrain_to_retrieval(state_dict: Mapping[str, Tensor], fusion_layer: int) -> Remap:
    """``Retrieval.py`` / ``Grounding.py``: the same modules; the queues and ``queue_ptr`` load too.

    Missing: ``queue.idx_queue`` (image ids start at -100). Unexpected: both MLM heads.
    """
    del fusion_layer
    return Remap(
        dict(state_dict),
        ("queue.idx_queue",),
        MLM_HEADS,
        "Retrieval.py: pretraining queues kept (ids -100); MLM heads unused",
    )


def pretrain_to_ve(state_dict: Mapping[str, Tensor], fusion_layer: int) -> Remap:
    """``VE.py``: encoders and teachers load; ``cls_head*`` is new; contrastive parts and MLM heads unused."""
    del fusion_layer
    return Remap(
        dict(state_dict),
        ("cls_head.*", "cls_head_m.*"),
        CONTRASTIVE_ONLY + MLM_HEADS,
        "VE.py: new cls_head; ITC/ITM parts and MLM heads unused",
    )


def pretrain_to_vqa(state_dict: Mapping[str, Tensor], fusion_layer: int) -> Remap:
    """``VQA.py``: the encoder keeps every layer; the answer decoder gets the fusion layers.

    Decoder layer ``i - F`` is pretraining layer ``i >= F`` (self-attention, cross-attention, FFN); the decoder
    also receives the embeddings, and ``lm_head`` is the MLM head. The same holds for the teachers.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        module, _, rest = key.partition(".")
        if module in ("mlm_head", "mlm_head_m"):
            out[module.replace("mlm_head", "lm_head") + "." + rest] = value
            continue
        out[key] = value
        layer, embed = _LAYER.match(key), _EMBEDDINGS.match(key)
        if embed:
            out[embed.group(1).replace("text_encoder", "text_decoder") + "." + embed.group(2)] = value
        elif layer and int(layer.group(2)) >= fusion_layer:
            decoder = layer.group(1).replace("text_encoder", "text_decoder")
            out[f"{decoder}.encoder.layer.{int(layer.group(2)) - fusion_layer}.{layer.group(3)}"] = value
    return Remap(
        out,
        (),
        CONTRASTIVE_ONLY,
        f"VQA.py: decoder = embeddings + layers {fusion_layer}.. as 0.. + MLM head; ITC/ITM parts unused",
    )


def pretrain_to_text_assignment(state_dict: Mapping[str, Tensor], fusion_layer: int) -> Remap:
    """``Pretrain_nlvr.py``: text layers keep their index; fusion layer ``L`` fills two layers.

    Layer ``L >= F`` is written to layers ``2(L-F)+F`` and ``2(L-F)+F+1`` (their cross-attention key/value is
    one shared module). The teacher stack is remapped the same way, then reported unexpected with every other
    teacher, the queues, ``itm_head`` and the MLM heads (the TA model has none of them).
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        layer = _LAYER.match(key)
        index = int(layer.group(2)) if layer else -1
        if layer is None or index < fusion_layer:
            out[key] = value
            continue
        first = 2 * (index - fusion_layer) + fusion_layer
        for target in (first, first + 1):
            out[f"{layer.group(1)}.encoder.layer.{target}.{layer.group(3)}"] = value
    teachers = sorted({k.split(".", 1)[0] for k in state_dict if k.split(".", 1)[0].endswith("_m")})
    return Remap(
        out,
        ("ta_head.*",),
        ("queue.*", "itm_head.*", "mlm_head.*", *(f"{t}.*" for t in teachers)),
        "Pretrain_nlvr.py: fusion layers duplicated; new ta_head; teachers, queues, ITM and MLM heads unused",
    )


def text_assignment_to_nlvr(state_dict: Mapping[str, Tensor], fusion_layer: int) -> Remap:
    """``NLVR.py``: the 18-layer encoder and ViT load; ``cls_head`` is new; ITC parts and ``ta_head`` unused."""
    del fusion_layer
    return Remap(
        dict(state_dict),
        ("cls_head.*",),
        ("temp", "vision_proj.*", "text_proj.*", "ta_head.*"),
        "NLVR.py: new cls_head; temp, projections and ta_head unused",
    )


RemapFn = Callable[[Mapping[str, Tensor], int], Remap]


def retrieval_to_grounding(state_dict: Mapping[str, Tensor], fusion_layer: int) -> Remap:
    """``Grounding.py`` builds the retrieval model: a retrieval checkpoint (``refcoco.pth`` is one) loads as is."""
    del fusion_layer
    return Remap(
        dict(state_dict), note="the grounding model is the retrieval model: loaded without remapping"
    )


BENCHMARK_TASKS = ("winoground", "sugarcrepe", "aro")
"""Evaluation-only benchmarks that score with the retrieval model (its ITC features and ITM head)."""


def same_model(state_dict: Mapping[str, Tensor], fusion_layer: int) -> Remap:
    """A benchmark runs the retrieval model itself: a retrieval checkpoint (``mscoco.pth``) loads as is."""
    del fusion_layer
    return Remap(dict(state_dict), note="the benchmarks run the retrieval model: loaded without remapping")


CONVERSIONS: dict[tuple[str, str], RemapFn] = {
    ("pretrain", "retrieval"): pretrain_to_retrieval,
    ("pretrain", "grounding"): pretrain_to_retrieval,
    ("retrieval", "grounding"): retrieval_to_grounding,
    **{("pretrain", name): pretrain_to_retrieval for name in BENCHMARK_TASKS},
    **{("retrieval", name): same_model for name in BENCHMARK_TASKS},
    ("pretrain", "vqa"): pretrain_to_vqa,
    ("pretrain", "ve"): pretrain_to_ve,
    ("pretrain", "nlvr_pretrain"): pretrain_to_text_assignment,
    ("nlvr_pretrain", "nlvr"): text_assignment_to_nlvr,
}
"""(source task, target task) -> conversion; a checkpoint of the target task itself loads unchanged."""


def remap_state_dict(state_dict: Mapping[str, Tensor], source: str, target: str, fusion_layer: int) -> Remap:
    """Map a state dict (our layout) of task ``source`` onto a model of task ``target``.

    Args:
        state_dict: Our layout.
        source: Task of the checkpoint (``albef.checkpoint.layout.detect_task``).
        target: Task of the model.
        fusion_layer: First fusion layer F of the target's text encoder.

    Raises:
        ValueError: No official conversion leads from ``source`` to ``target`` (the valid pairs are listed).
    """
    if source == target:
        return Remap(dict(state_dict), note="same task: loaded without remapping")
    convert = CONVERSIONS.get((source, target))
    if convert is None:
        pairs = ", ".join(f"{s}->{t}" for s, t in CONVERSIONS)
        raise ValueError(
            f"no conversion from a {source} checkpoint to a {target} model; "
            f"supported: {pairs}, or a checkpoint of the model's own task"
        )
    return convert(state_dict, fusion_layer)
