"""The eager-attention baseline of ``bench_model.py``: transformers' BERT and timm's ViT holding our weights.

The official ``xbert.py`` / ``vit.py`` were copied from this code (with eager attention); it stands in for
the official model, which no longer runs on current transformers.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertEncoder

from albef.config.schema import ModelConfig, TextConfig, VisionConfig
from albef.models.albef import ContrastiveALBEF
from albef.models.builders import build_text, build_vision
from albef.workflows.bench import resolve_preset_name

resolve_preset = resolve_preset_name
"""``base`` -> ``albef_base``; a registered full name is kept."""


def build_ours(cfg: ModelConfig, seed: int) -> ContrastiveALBEF:
    """The retrieval/pretraining core without EMA teachers (they take no part in these stages)."""
    torch.manual_seed(seed)
    model = ContrastiveALBEF(
        build_vision(cfg.vision),
        build_text(cfg.text),
        embed_dim=cfg.embed_dim,
        temp=cfg.temp,
        queue_size=cfg.queue_size,
        momentum=cfg.momentum,
    )
    randomise_affine_(model)
    return model.eval()


@torch.no_grad()
def randomise_affine_(model: nn.Module) -> None:
    """Draw every bias and LayerNorm affine at random, so the equivalence check covers them too.

    Freshly initialised biases are 0 and LayerNorms the identity; a baseline that dropped one would match.
    """
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.weight.normal_(1.0, 0.1)
            module.bias.normal_(0.0, 0.02)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.normal_(0.0, 0.02)


def baseline_vit(ours: nn.Module, cfg: VisionConfig) -> VisionTransformer:
    """timm's ViT with eager attention in every block (as the official timm-0.4 copy), our weights."""
    vit = VisionTransformer(
        img_size=cfg.image_res,
        patch_size=cfg.patch_size,
        embed_dim=cfg.width,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias,
        num_classes=0,
        global_pool="token",
        norm_layer=functools.partial(nn.LayerNorm, eps=cfg.layer_norm_eps),
        act_layer=nn.GELU,
    )
    vit.load_state_dict(ours.state_dict(), strict=True)
    for block in vit.blocks:
        block.attn.fused_attn = False
    return vit.eval()


def hf_bert_config(cfg: TextConfig, num_layers: int, cross_attention: bool) -> BertConfig:
    """A transformers config with our sizes and eager attention.

    transformers builds cross-attention only into decoder layers; ``is_decoder`` only selects the causal
    mask that ``BertModel.forward`` would build, and the fusion stack is called below that, with our mask.
    """
    if cross_attention and cfg.encoder_width != cfg.hidden_size:
        raise ValueError("transformers' cross-attention needs encoder_width == hidden_size")
    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=cfg.hidden_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=cfg.pad_token_id,
        is_decoder=cross_attention,
        add_cross_attention=cross_attention,
        attn_implementation="eager",
    )


def baseline_bert(ours: nn.Module, cfg: TextConfig) -> tuple[BertModel, BertEncoder]:
    """transformers' BERT split as the official ``mode='text'`` / ``mode='fusion'``, with our weights.

    Our ``BertStack`` keys are transformers' names: ``embeddings.*`` and ``encoder.layer.N.*``.
    """
    fusion = cfg.fusion_layer
    state = ours.state_dict()
    text_state, fusion_state = {}, {}
    for key, value in state.items():
        if key.startswith("encoder.layer."):
            index, rest = key.removeprefix("encoder.layer.").split(".", 1)
            if int(index) < fusion:
                text_state[key] = value
            else:
                fusion_state[f"layer.{int(index) - fusion}.{rest}"] = value
        else:
            text_state[key] = value
    text = BertModel(hf_bert_config(cfg, fusion, cross_attention=False), add_pooling_layer=False)
    missing, unexpected = text.load_state_dict(text_state, strict=False)
    # transformers may keep a non-persistent-looking ``position_ids`` buffer in the state dict.
    if [k for k in missing if not k.endswith("position_ids")] or unexpected:
        raise RuntimeError(f"text baseline: missing {missing}, unexpected {unexpected}")
    fusion_encoder = BertEncoder(hf_bert_config(cfg, cfg.num_layers - fusion, cross_attention=True))
    fusion_encoder.load_state_dict(fusion_state, strict=True)
    return text.eval(), fusion_encoder.eval()


@dataclasses.dataclass
class Baseline:
    """The baseline modules; projections and heads are ours (they are single Linear layers)."""

    vit: VisionTransformer
    text: BertModel
    fusion: BertEncoder

    def to(self, dtype: torch.dtype) -> Baseline:
        """A copy cast to ``dtype``."""
        return Baseline(*(copy.deepcopy(m).to(dtype) for m in (self.vit, self.text, self.fusion)))
