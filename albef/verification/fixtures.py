"""Reading the official reference fixtures and building our model from one of them.

A fixture file (``../shared/reference/official_tiny/*.pt``) is a plain dict with ``meta``, ``config``,
``state_dict`` (the official key layout), ``inputs`` and ``outputs``. :func:`model_config_from_fixture` maps
its ``config`` onto our :class:`~albef.config.schema.ModelConfig`, and :func:`build_reference_model` builds
the task model and loads the converted state dict strictly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from albef.checkpoint.layout import official_to_ours
from albef.config.schema import ModelConfig, TextConfig, VisionConfig
from albef.models.builders import create_model, two_image_layers

FIXTURE_TASKS: dict[str, str] = {
    "pretrain": "pretrain",
    "retrieval": "retrieval",
    "vqa": "vqa",
    "nlvr": "nlvr",
    "ve": "ve",
    "grounding": "retrieval",
}
"""Fixture kind -> the task model of ``albef.models.create_model``. The kind is the file's name when it is one of
these (``grounding.pt`` holds the retrieval model that ``Grounding.py`` builds), else its ``meta['model']``."""

REQUIRED_KEYS = ("config", "state_dict", "inputs", "outputs")


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


class FixtureError(Exception):
    """A fixture file that cannot be read, is not a reference fixture, or whose config we cannot map."""


@dataclass(frozen=True)
class ReferenceFixture:
    """One loaded fixture file.

    Attributes:
        path: Where it was read from.
        kind: Which official model produced it (``pretrain``, ``retrieval``, ``vqa``, ``nlvr``, ``ve``).
        data: The whole file as loaded (``config``, ``state_dict``, ``inputs``, ``outputs`` and extras such
            as ``conversions``).
    """

    path: Path
    kind: str
    data: Mapping[str, Any]

    @property
    def config(self) -> Mapping[str, Any]:
        """The official hyper-parameters of the file."""
        return self.data["config"]

    @property
    def inputs(self) -> Mapping[str, Any]:
        """What was fed to the official model."""
        return self.data["inputs"]

    @property
    def outputs(self) -> Mapping[str, Any]:
        """What the official model returned."""
        return self.data["outputs"]

    @property
    def task(self) -> str:
        """Our task model for this fixture."""
        return FIXTURE_TASKS[self.kind]


def load_fixture(path: Path) -> ReferenceFixture:
    """Read a fixture file safely (``weights_only``) and check that it is one.

    Raises:
        FixtureError: The file is unreadable, lacks a required key, or comes from an unknown model.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt pickle/zip
        raise FixtureError(f"cannot read {path.name}: {type(err).__name__}: {err}") from err
    if not isinstance(data, Mapping):
        raise FixtureError(f"{path.name} holds a {type(data).__name__}, not a fixture dict")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise FixtureError(f"{path.name} is not a reference fixture: missing {', '.join(missing)}")
    meta = data.get("meta")
    kind = str(meta.get("model", path.stem)) if isinstance(meta, Mapping) else path.stem
    if path.stem in FIXTURE_TASKS:
        kind = path.stem
    if kind not in FIXTURE_TASKS:
        known = ", ".join(sorted(FIXTURE_TASKS))
        raise FixtureError(f"{path.name} comes from an unknown official model '{kind}' (known: {known})")
    return ReferenceFixture(path=path, kind=kind, data=data)


# -- config mapping -----------------------------------------------------------------------------------------
# Official per-model architecture overrides -> (tasks where our builder implies it, the value it implies).
# Our builders derive these sizes from the base text config, so an override is only checked, never applied.
_OVERRIDES: dict[str, tuple[frozenset[str], Callable[[TextConfig], int]]] = {
    "text_encoder.num_hidden_layers": (frozenset({"nlvr", "nlvr_pretrain"}), two_image_layers),
    "text_decoder.num_hidden_layers": (frozenset({"vqa"}), lambda t: t.num_layers - t.fusion_layer),
    "text_decoder.fusion_layer": (frozenset({"vqa"}), lambda t: 0),
}


def _check_overrides(overrides: Mapping[str, Any], text: TextConfig, task: str) -> None:
    """Each official override must be what our ``task`` builder derives from ``text``."""
    for key, value in overrides.items():
        if key not in _OVERRIDES:
            raise FixtureError(f"unknown config override '{key}' (known: {', '.join(sorted(_OVERRIDES))})")
        tasks, implied = _OVERRIDES[key]
        if task not in tasks:
            raise FixtureError(f"override '{key}' does not apply to task '{task}'")
        if int(value) != implied(text):
            raise FixtureError(f"override {key}={value}, but our '{task}' model builds {implied(text)}")


def model_config_from_fixture(config: Mapping[str, Any], task: str) -> ModelConfig:
    """Map an official fixture ``config`` onto our :class:`ModelConfig` for ``task``.

    The ``overrides`` (NLVR²'s ``text_encoder.num_hidden_layers: 18``, VQA's 6-layer decoder with
    ``fusion_layer: 0``) are not copied: our ``nlvr`` builder doubles the fusion layers and our ``vqa``
    builder makes the decoder from the fusion layers, so they are checked against what those builders make.

    Args:
        config: The fixture's ``config`` dict (``vit``, ``bert_config``, ``image_res``, ``embed_dim``, ...).
        task: Our task model (``pretrain``, ``retrieval``, ``vqa``, ``nlvr``, ``nlvr_pretrain``, ``ve``).

    Raises:
        FixtureError: A missing field, an unsupported setting or an override our builder does not imply.
    """
    try:
        if config["bert_config"].get("hidden_act", "gelu") != "gelu":
            raise FixtureError(
                f"unsupported hidden_act '{config['bert_config']['hidden_act']}' (ours is exact GELU)"
            )
        cfg = model_config_from_official(config)
    except KeyError as err:
        raise FixtureError(f"fixture config lacks {err}") from None
    _check_overrides(config.get("overrides", {}), cfg.text, task)
    return cfg


# -- model --------------------------------------------------------------------------------------------------
def build_reference_model(fixture: ReferenceFixture) -> nn.Module:
    """Our task model for ``fixture``, with its ``state_dict`` loaded strictly, in eval mode.

    The official keys are renamed by :func:`albef.checkpoint.layout.official_to_ours`; any missing or
    unexpected key after that is an error.

    Raises:
        FixtureError: The config cannot be mapped.
        RuntimeError: A missing/unexpected key or a shape mismatch (from ``load_state_dict(strict=True)``).
    """
    cfg = model_config_from_fixture(fixture.config, fixture.task)
    model = create_model(fixture.task, cfg)
    model.load_state_dict(official_to_ours(fixture.data["state_dict"], fixture.task), strict=True)
    return model.eval()
