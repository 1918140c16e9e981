"""Initialisation from public weights: BERT-base for the text stacks, DeiT/ViT for the image encoder.

This is what the official constructors do with hidden downloads (``BertForMaskedLM.from_pretrained`` for every
BERT module and teacher, DeiT through ``torch.hub``); here it is explicit, strict and called only on demand:

- :func:`init_text_from_bert`: layer ``i`` of every BERT stack of the model (``text_encoder``; the VQA
  ``text_decoder`` too) takes BERT layer ``i`` (as ``from_pretrained`` does for a config with fewer or more
  layers), plus the embeddings and, where the model has one, the MLM / LM head. What BERT lacks (every
  cross-attention block, the layers beyond BERT's count such as NLVR²'s 12-17) gets BERT's own init:
  normal(0, 0.02) Linear/Embedding weights, zero biases, LayerNorm (1, 0). Teachers are then copied.
- :func:`init_vision_from_deit`: a timm DeiT / ViT state dict into ``visual_encoder`` (``head.*`` dropped,
  ``pos_embed`` resized from the source grid, e.g. 14x14 at 224 px, to the model's), teacher copied.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from albef.checkpoint.convert import teacher_names
from albef.checkpoint.io import CheckpointNotFoundError, read_state_dict, unwrap_state_dict
from albef.checkpoint.strict import CheckpointMismatchError, LoadReport, load_state_dict_strict
from albef.models.bert import INIT_STD, BertStack, MLMHead, init_bert_weights
from albef.models.momentum import copy_params
from albef.models.vision import resize_pos_embed

BERT_INIT_STD = INIT_STD
"""``initializer_range`` of bert-base (and of the official config)."""
TEXT_STACKS = ("text_encoder", "text_decoder")
PREDICTION_HEADS = ("mlm_head", "lm_head")
IGNORED_BERT_KEYS = re.compile(
    r"^(bert\.pooler\.|cls\.seq_relationship\.|.*\.position_ids$|.*\.token_type_ids$)"
)
"""HF keys with no place in ALBEF (the pooler, the NSP head, index buffers): dropped and reported."""
TIED_DECODER = "cls.predictions.decoder.weight"
"""Tied to the word embeddings in HF: checked equal to them, not loaded separately."""
_HF_LAYER = re.compile(r"^bert\.encoder\.layer\.(\d+)\.")

Source = str | os.PathLike[str] | Mapping[str, Any]


@torch.no_grad()
def bert_init_(module: nn.Module, std: float = BERT_INIT_STD) -> None:
    """BERT's ``_init_weights`` on every submodule: normal(0, std) weights, zero biases, LayerNorm (1, 0)."""
    with torch.no_grad():
        module.apply(lambda sub: init_bert_weights(sub, std))


def _read_source(source: Source, what: str) -> tuple[dict[str, Tensor], str]:
    if isinstance(source, Mapping):
        return unwrap_state_dict(source, what), what
    return read_state_dict(source), str(source)


def bert_state_dict(source: Source) -> tuple[dict[str, Tensor], str]:
    """A BERT state dict in HF ``BertForMaskedLM`` naming, and a name for messages.

    ``source`` is a state dict, a weights file, or a local directory / hub name given to
    ``transformers.BertForMaskedLM.from_pretrained`` (imported and called only here). A ``BertModel`` dict
    (no ``bert.`` prefix) and TF-style ``LayerNorm.gamma/beta`` names are accepted.
    """
    if isinstance(source, Mapping) or Path(source).is_file():
        state, name = _read_source(source, "BERT state dict")
    elif Path(source).is_dir():
        state, name = read_state_dict(_weights_file(Path(source))), str(source)
    else:
        state, name = _bert_from_hub(str(source)), str(source)
    if not any(k.startswith("bert.") for k in state):
        state = {
            ("bert." + k if k.split(".")[0] in ("embeddings", "encoder", "pooler") else k): v
            for k, v in state.items()
        }
    return {
        k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v
        for k, v in state.items()
    }, name


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""The weights file of a Hugging Face model directory, in the order looked for."""


def _weights_file(directory: Path) -> Path:
    """The weights file of a local Hugging Face model directory (read as is: no random head is made up)."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointNotFoundError(f"{directory}: no {' or '.join(WEIGHT_FILES)} in this directory")


def _bert_from_hub(name: str) -> dict[str, Tensor]:
    """``BertForMaskedLM.from_pretrained(name)``'s weights (downloaded by transformers when reachable)."""
    from transformers import BertForMaskedLM

    try:
        return dict(BertForMaskedLM.from_pretrained(name).state_dict())
    except (OSError, ValueError) as err:
        raise CheckpointNotFoundError(
            f"BERT weights {name!r}: not a local file or directory, and the hub did not give them "
            f"({str(err).splitlines()[0]}); download them where there is a network (e.g. "
            f"huggingface-cli download {name} --local-dir DIR) and give DIR"
        ) from None


def _stack_targets(
    name: str, stack: BertStack, bert_layers: int
) -> tuple[dict[str, str], list[tuple[str, nn.Module]]]:
    """Our key -> BERT key for one stack, and the submodules BERT has no weights for."""
    targets = {f"{name}.embeddings.{k}": f"bert.embeddings.{k}" for k in stack.embeddings.state_dict()}
    new: list[tuple[str, nn.Module]] = []
    for i, layer in enumerate(stack.encoder.layer):
        prefix = f"{name}.encoder.layer.{i}"
        if i >= bert_layers:
            new.append((prefix, layer))
            continue
        for key in layer.state_dict():
            if not key.startswith("crossattention."):
                targets[f"{prefix}.{key}"] = f"bert.encoder.layer.{i}.{key}"
        cross = getattr(layer, "crossattention", None)
        if cross is not None:
            new.append((f"{prefix}.crossattention", cross))
    return targets, new


def _head_targets(name: str, head: MLMHead, state: Mapping[str, Tensor]) -> dict[str, str]:
    """Our key -> BERT key for a prediction head (the decoder weight is the stack's word embedding)."""
    targets = {f"{name}.transform.{k}": f"cls.predictions.transform.{k}" for k in head.transform.state_dict()}
    targets[f"{name}.bias"] = "cls.predictions.bias"
    has_decoder_bias = "cls.predictions.decoder.bias" in state
    targets[f"{name}.decoder.bias"] = (
        "cls.predictions.decoder.bias" if has_decoder_bias else "cls.predictions.bias"
    )
    return targets


def _bert_plan(
    model: nn.Module, state: Mapping[str, Tensor]
) -> tuple[dict[str, str], list[tuple[str, nn.Module]]]:
    """Where every BERT tensor goes in ``model``, and which submodules get a fresh BERT init."""
    bert_layers = len({int(m.group(1)) for k in state if (m := _HF_LAYER.match(k))})
    targets: dict[str, str] = {}
    new: list[tuple[str, nn.Module]] = []
    stacks = [(n, getattr(model, n)) for n in TEXT_STACKS if isinstance(getattr(model, n, None), BertStack)]
    if not stacks:
        raise ValueError(
            f"{type(model).__name__} has no BERT stack ({' or '.join(TEXT_STACKS)}) to initialise"
        )
    for name, stack in stacks:
        stack_targets, stack_new = _stack_targets(name, stack, bert_layers)
        targets.update(stack_targets)
        new += stack_new
    has_head = any(k.startswith("cls.predictions.") for k in state)
    for name in PREDICTION_HEADS:
        head = getattr(model, name, None)
        if isinstance(head, MLMHead):
            if has_head:
                targets.update(_head_targets(name, head, state))
            else:  # a BertModel (e.g. a sentence encoder) has no MLM head: BERT's init for its transform and
                # a zero bias; the decoder weight stays tied to the (loaded) word embeddings
                new.append((f"{name}.transform", head.transform))
    return targets, new


def _check_bert(
    model: nn.Module, state: Mapping[str, Tensor], targets: Mapping[str, str], name: str
) -> list[str]:
    """Raise on missing, unused or mis-shaped BERT tensors; return the ignored BERT keys."""
    own = model.state_dict()
    needed = set(targets.values())
    has_head = any(hf.startswith("cls.predictions.") for hf in needed)
    used = needed | {TIED_DECODER} if has_head else needed  # the tied weight is optional (HF may omit it)
    ignored = [  # a model without a prediction head drops it, as BertModel.from_pretrained does
        k for k in state if k not in used and (IGNORED_BERT_KEYS.match(k) or k.startswith("cls.predictions."))
    ]
    missing = sorted(hf for hf in needed if hf not in state)
    unused = [k for k in state if k not in used and k not in ignored]
    shapes = [
        f"{hf} -> {ours}: checkpoint {tuple(state[hf].shape)} vs model {tuple(own[ours].shape)}"
        for ours, hf in targets.items()
        if hf in state and state[hf].shape != own[ours].shape
    ]
    tied = state.get(TIED_DECODER) if has_head else None
    words = state.get("bert.embeddings.word_embeddings.weight")
    if tied is not None and words is not None and (tied.shape != words.shape or not torch.equal(tied, words)):
        shapes.append(f"{TIED_DECODER} differs from bert.embeddings.word_embeddings.weight (untied)")
    if missing or unused or shapes:
        context = f"{name}: BERT weights do not fit the {type(model).__name__} text stacks"
        raise CheckpointMismatchError(context, missing, unused, shapes)
    return ignored


def _why_new(prefix: str) -> str:
    """Why a submodule got BERT's init instead of BERT's weights."""
    if prefix.endswith(".crossattention"):
        return "cross-attention (BERT has none)"
    if prefix.split(".")[0] in PREDICTION_HEADS:
        return "the source has no MLM head (a BertModel); the bias is zero, the decoder tied to the words"
    return "a layer beyond the source's"


def init_text_from_bert(model: nn.Module, source: Source) -> LoadReport:
    """Initialise the model's BERT stacks (and MLM/LM head) from BERT weights, as the official constructors.

    Args:
        model: Any task model.
        source: A local directory or hub name (``BertForMaskedLM.from_pretrained``, called only now), a
            weights file, or a state dict in HF layout (``bert.embeddings.*``, ``bert.encoder.layer.N.*``,
            ``cls.predictions.*``; ``bert.pooler.*`` and ``cls.seq_relationship.*`` are dropped).

    Returns:
        A :class:`LoadReport`: ``loaded`` (our keys), ``missing`` (our keys given BERT's init: cross-attention
        and extra layers), ``unexpected`` (BERT keys ignored), ``teachers_copied``.

    Raises:
        CheckpointMismatchError: A BERT tensor the model needs is absent, a BERT tensor has no place
            (listed), a shape differs (key and both shapes), or the decoder weight is not tied.
    """
    state, name = bert_state_dict(source)
    targets, new = _bert_plan(model, state)
    ignored = _check_bert(model, state, targets, name)
    own = model.state_dict()
    with torch.no_grad():
        for ours, hf in targets.items():
            own[ours].copy_(state[hf])
    for _, module in new:
        bert_init_(module)
    fresh_heads = [prefix.split(".")[0] for prefix, _ in new if prefix.split(".")[0] in PREDICTION_HEADS]
    with torch.no_grad():
        for name in fresh_heads:
            cast(MLMHead, getattr(model, name)).bias.zero_()
    new_prefixes = tuple(prefix + "." for prefix, _ in new)
    head_biases = {f"{name}.{key}" for name in fresh_heads for key in ("bias", "decoder.bias")}
    report = LoadReport(
        loaded=list(targets),
        missing=[k for k in own if k.startswith(new_prefixes) or k in head_biases],
        unexpected=ignored,
        source_layout="hf:bert",
        conversion="bert->text",
    )
    report.notes += [f"{prefix}: BERT's init (normal 0.02), {_why_new(prefix)}" for prefix, _ in new]
    report.teachers_copied = [t for t in teacher_names(model) if t in TEXT_STACKS + PREDICTION_HEADS]
    copy_params(model, report.teachers_copied)
    return report


def _vit_from_timm(name: str) -> dict[str, Tensor]:
    """The pretrained weights of the timm model ``name`` (e.g. ``deit_base_patch16_224``; downloaded by timm)."""
    import timm

    try:
        return dict(timm.create_model(name, pretrained=True).state_dict())
    except RuntimeError as err:  # an unknown model name
        raise CheckpointNotFoundError(
            f"ViT weights {name!r}: not a local file nor a timm model ({err})"
        ) from None
    except OSError as err:  # offline, or the hub refused
        raise CheckpointNotFoundError(
            f"ViT weights {name!r}: not a local file, and timm could not download them ({str(err).splitlines()[0]}); "
            "download them where there is a network and give the file"
        ) from None


def init_vision_from_deit(model: nn.Module, source: Source) -> LoadReport:
    """Initialise ``model.visual_encoder`` from a timm DeiT/ViT state dict, then copy its teacher.

    Args:
        model: Any task model (its ``visual_encoder`` is a timm ``VisionTransformer``).
        source: A file (``{'model': sd}`` as DeiT releases, or bare; ``.pth``/``.safetensors``), a state dict,
            or a timm model name (``deit_base_patch16_224``: its pretrained weights, downloaded by timm).

    Returns:
        A :class:`LoadReport` in ``visual_encoder``'s own key names (``unexpected``: the dropped ``head.*``).

    Raises:
        CheckpointMismatchError: Missing or unexpected keys (e.g. a distilled DeiT's ``dist_token``), shapes.
    """
    if isinstance(source, Mapping) or Path(source).is_file():
        state, name = _read_source(source, "ViT state dict")
    else:
        state, name = _vit_from_timm(str(source)), str(source)
    encoder = cast(nn.Module, model.visual_encoder)
    head = [k for k in state if k.startswith("head.")]
    state = {k: v for k, v in state.items() if k not in head}
    target = encoder.state_dict().get("pos_embed")
    resized = []
    pos = state.get("pos_embed")
    if (
        target is not None
        and pos is not None
        and pos.shape != target.shape
        and pos.shape[-1] == target.shape[-1]
    ):
        extra = int(getattr(encoder, "num_prefix_tokens", 1))
        state["pos_embed"] = resize_pos_embed(pos, target.shape[1] - extra, extra)
        resized.append(("pos_embed", tuple(pos.shape), tuple(target.shape)))
    report = load_state_dict_strict(encoder, state, context=f"{name}: ViT weights do not fit visual_encoder")
    report.unexpected, report.resized = head, resized
    report.source_layout, report.conversion = "timm:vit", "vit->visual_encoder"
    report.teachers_copied = [t for t in teacher_names(model) if t == "visual_encoder"]
    copy_params(model, report.teachers_copied)
    return report


def initialise_from_config(model: nn.Module, text: str | None, vision: str | None) -> dict[str, LoadReport]:
    """``model.text.init`` / ``model.vision.init``: the official recipe's starting weights, each only when set.

    Returns:
        ``{"text": report, "vision": report}`` for what was initialised.
    """
    reports: dict[str, LoadReport] = {}
    if text:
        reports["text"] = init_text_from_bert(model, text)
    if vision:
        reports["vision"] = init_vision_from_deit(model, vision)
    return reports
