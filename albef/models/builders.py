"""Component builders (parametric) and presets (named), and ``create_model(task, cfg)``.

Component builders turn config sections into modules; task builders compose them into the task models.
Model presets are named :class:`ModelConfig` factories registered in :data:`MODEL_PRESETS`
(``albef ls models``); task builders are registered in :data:`TASK_MODELS`. Nothing here downloads
weights: initialisation from BERT-base / DeiT / ALBEF checkpoints is ``albef.checkpoint``'s job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from albef.config.schema import ModelConfig, TextConfig, VisionConfig
from albef.models.albef import ALBEFPretrain, ALBEFRetrieval
from albef.models.bert import BertStack, MLMHead
from albef.models.classify import ALBEFNLVR, ALBEFVE, ALBEFTextAssignment
from albef.models.vision import VisionEncoder
from albef.models.vqa import ALBEFVQA
from albef.registry import Registry

MODEL_PRESETS: Registry[Callable[[], ModelConfig]] = Registry("model preset")
TASK_MODELS: Registry[Callable[[ModelConfig], nn.Module]] = Registry("task")


# -- component builders ------------------------------------------------------------------------------------
def build_vision(cfg: VisionConfig) -> VisionEncoder:
    """The ViT image encoder."""
    return VisionEncoder(cfg)


def build_text(cfg: TextConfig, num_layers: int | None = None) -> BertStack:
    """The text + fusion encoder (``num_layers`` overrides the config, e.g. 2x fusion layers for NLVR²)."""
    return BertStack(cfg, num_layers=num_layers)


def build_decoder(cfg: TextConfig) -> tuple[BertStack, MLMHead]:
    """The VQA answer decoder: the fusion layers as a causal stack cross-attending to question states."""
    dec_cfg = dataclasses.replace(cfg, encoder_width=cfg.hidden_size)
    decoder = BertStack(dec_cfg, num_layers=cfg.num_layers - cfg.fusion_layer, fusion_layer=0, causal=True)
    return decoder, MLMHead(dec_cfg, decoder.embeddings.word_embeddings)


def two_image_layers(cfg: TextConfig) -> int:
    """Layer count of the NLVR²/TA encoder: text layers + every fusion layer doubled (18 for BERT-base)."""
    return cfg.fusion_layer + 2 * (cfg.num_layers - cfg.fusion_layer)


# -- task models ------------------------------------------------------------------------------------------
@TASK_MODELS.register("pretrain", help="ITC + ITM + MLM with EMA teachers and feature queues")
def pretrain_model(cfg: ModelConfig) -> ALBEFPretrain:
    """The pretraining model."""
    text = build_text(cfg.text)
    return ALBEFPretrain(
        build_vision(cfg.vision),
        text,
        MLMHead(cfg.text, text.embeddings.word_embeddings),
        embed_dim=cfg.embed_dim,
        temp=cfg.temp,
        queue_size=cfg.queue_size,
        momentum=cfg.momentum,
        distill=cfg.distill,
    )


@TASK_MODELS.register("retrieval", help="ITC (image-id positives, queue) + ITM re-ranking")
def retrieval_model(cfg: ModelConfig) -> ALBEFRetrieval:
    """The retrieval model."""
    return ALBEFRetrieval(
        build_vision(cfg.vision),
        build_text(cfg.text),
        embed_dim=cfg.embed_dim,
        temp=cfg.temp,
        queue_size=cfg.queue_size,
        momentum=cfg.momentum,
        distill=cfg.distill,
    )


TASK_MODELS.add(
    "grounding", retrieval_model, help="the retrieval model (Grounding.py): Grad-CAM of its ITM or ITC path"
)
for _benchmark in ("winoground", "sugarcrepe", "aro"):
    TASK_MODELS.add(
        _benchmark, retrieval_model, help="the retrieval model: ITC, ITM and ITM + ITC pair scores"
    )


@TASK_MODELS.register("vqa", help="question encoder + causal answer decoder, answer-list ranking")
def vqa_model(cfg: ModelConfig) -> ALBEFVQA:
    """The VQA model."""
    decoder, head = build_decoder(cfg.text)
    return ALBEFVQA(build_vision(cfg.vision), build_text(cfg.text), decoder, head, cfg.distill, cfg.momentum)


@TASK_MODELS.register("nlvr", help="two-image fusion (shared key/value pairs) + 2-way head")
def nlvr_model(cfg: ModelConfig) -> ALBEFNLVR:
    """The NLVR² model."""
    text = build_text(cfg.text, num_layers=two_image_layers(cfg.text))
    return ALBEFNLVR(build_vision(cfg.vision), text, cfg.distill, cfg.momentum)


@TASK_MODELS.register("nlvr_pretrain", help="text-assignment pretraining for NLVR2 (3-way head)")
def text_assignment_model(cfg: ModelConfig) -> ALBEFTextAssignment:
    """The text-assignment model."""
    text = build_text(cfg.text, num_layers=two_image_layers(cfg.text))
    return ALBEFTextAssignment(build_vision(cfg.vision), text, cfg.embed_dim)


@TASK_MODELS.register("ve", help="SNLI-VE: multimodal [CLS] -> 3 classes")
def ve_model(cfg: ModelConfig) -> ALBEFVE:
    """The SNLI-VE model."""
    return ALBEFVE(build_vision(cfg.vision), build_text(cfg.text), cfg.distill, cfg.momentum)


def create_model(task: str, cfg: ModelConfig) -> nn.Module:
    """Build the model of ``task`` (``albef ls tasks``) from a model config."""
    return TASK_MODELS.get(task)(cfg)


# -- presets ----------------------------------------------------------------------------------------------
@MODEL_PRESETS.register("albef_base", help="official sizes: ViT-B/16 + BERT-base (6 text + 6 fusion layers)")
def albef_base() -> ModelConfig:
    """ViT-B/16 at 256 px (pretraining resolution) + BERT-base, embed 256, queue 65536."""
    return ModelConfig()


@MODEL_PRESETS.register(
    "albef_tiny", help="the reference-fixture size: 32-wide, 2 ViT blocks, 12 BERT layers"
)
def albef_tiny() -> ModelConfig:
    """The size of ``../shared/reference/official_tiny`` (48 px, vocab 1000), for tests."""
    return ModelConfig(
        vision=VisionConfig(image_res=48, patch_size=16, width=32, depth=2, num_heads=2),
        text=TextConfig(
            vocab_size=1000,
            hidden_size=32,
            num_layers=12,
            num_heads=2,
            intermediate_size=64,
            fusion_layer=6,
            encoder_width=32,
            max_position_embeddings=64,
        ),
        embed_dim=16,
        queue_size=64,
    )


@MODEL_PRESETS.register(
    "albef_synthetic",
    help="CPU-sized model of the synthetic presets (128-wide, 4 ViT blocks, 2 text + 2 fusion layers)",
)
def albef_synthetic() -> ModelConfig:
    """The model section of the ``synthetic_*`` experiment presets."""
    from albef.config.io import load_config

    return load_config("synthetic_pretrain").model


def model_preset(name: str) -> ModelConfig:
    """The :class:`ModelConfig` of a registered preset."""
    return MODEL_PRESETS.get(name)()
