"""Initialisation from BERT (tiny local BertForMaskedLM) and from a timm ViT state dict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import BertConfig, BertForMaskedLM

from albef.checkpoint import CheckpointMismatchError, init_text_from_bert, init_vision_from_deit
from albef.models import create_model, model_preset
from albef.models.vision import resize_pos_embed


def tiny_bert(hidden: int = 32, seed: int = 0) -> BertForMaskedLM:
    """A BertForMaskedLM of albef_tiny's sizes, every tensor random (so misplaced copies show)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=1000,
        hidden_size=hidden,
        num_hidden_layers=12,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    bert = BertForMaskedLM(config)
    with torch.no_grad():
        for param in bert.parameters():
            param.normal_()
    return bert


@pytest.fixture(scope="module")
def bert_state() -> dict[str, torch.Tensor]:
    return dict(tiny_bert().state_dict())


def cross_attention_tensors(model: nn.Module, stack: str = "text_encoder") -> dict[str, torch.Tensor]:
    return {
        k: v for k, v in model.state_dict().items() if k.startswith(stack + ".") and ".crossattention." in k
    }


def assert_bert_init(tensors: dict[str, torch.Tensor]) -> None:
    """normal(0, 0.02) Linear weights, zero biases, LayerNorm (1, 0)."""
    weights = torch.cat(
        [v.flatten() for k, v in tensors.items() if k.endswith("weight") and "LayerNorm" not in k]
    )
    assert abs(float(weights.mean())) < 0.002 and abs(float(weights.std()) - 0.02) < 0.002
    for key, value in tensors.items():
        if key.endswith("bias"):
            assert torch.equal(value, torch.zeros_like(value)), key
        elif "LayerNorm" in key:
            assert torch.equal(value, torch.ones_like(value)), key


def test_pretrain_text_from_bert_state_dict(bert_state: dict[str, torch.Tensor]) -> None:
    model = create_model("pretrain", model_preset("albef_tiny"))
    source = dict(bert_state)
    source["bert.pooler.dense.weight"] = torch.zeros(32, 32)  # dropped, as from_pretrained does
    report = init_text_from_bert(model, source)
    sd = model.state_dict()
    assert torch.equal(
        sd["text_encoder.embeddings.word_embeddings.weight"], source["bert.embeddings.word_embeddings.weight"]
    )
    for i in (0, 5, 6, 11):  # text layers and fusion layers alike take BERT layer i
        assert torch.equal(sd[f"text_encoder.encoder.layer.{i}.attention.self.query.weight"],
                           source[f"bert.encoder.layer.{i}.attention.self.query.weight"])  # fmt: skip
        assert torch.equal(sd[f"text_encoder.encoder.layer.{i}.output.LayerNorm.bias"],
                           source[f"bert.encoder.layer.{i}.output.LayerNorm.bias"])  # fmt: skip
    assert torch.equal(
        sd["mlm_head.transform.dense.weight"], source["cls.predictions.transform.dense.weight"]
    )
    assert torch.equal(sd["mlm_head.bias"], source["cls.predictions.bias"])
    assert model.mlm_head.decoder.weight is model.text_encoder.embeddings.word_embeddings.weight
    cross = cross_attention_tensors(model)
    assert sorted(report.missing) == sorted(cross) and len(cross) == 6 * 10
    assert_bert_init(cross)
    assert report.unexpected == ["bert.pooler.dense.weight"]
    assert report.teachers_copied == ["text_encoder", "mlm_head"]
    for key, value in model.text_encoder.state_dict().items():
        assert torch.equal(value, model.text_encoder_m.state_dict()[key]), key


def test_nlvr_extra_layers_get_bert_init(bert_state: dict[str, torch.Tensor]) -> None:
    model = create_model("nlvr", model_preset("albef_tiny"))
    report = init_text_from_bert(model, bert_state)
    sd = model.state_dict()
    assert torch.equal(sd["text_encoder.encoder.layer.11.intermediate.dense.weight"],
                       bert_state["bert.encoder.layer.11.intermediate.dense.weight"])  # fmt: skip
    extra = {
        k: v
        for k, v in sd.items()
        if k.startswith(tuple(f"text_encoder.encoder.layer.{i}." for i in range(12, 18)))
    }
    assert set(extra) <= set(report.missing)
    assert_bert_init(extra)
    assert_bert_init(cross_attention_tensors(model))
    assert report.teachers_copied == ["text_encoder"]


def test_vqa_decoder_takes_first_bert_layers_and_lm_head(bert_state: dict[str, torch.Tensor]) -> None:
    model = create_model("vqa", model_preset("albef_tiny"))
    init_text_from_bert(model, bert_state)
    sd = model.state_dict()
    assert torch.equal(sd["text_decoder.encoder.layer.5.attention.self.key.bias"],
                       bert_state["bert.encoder.layer.5.attention.self.key.bias"])  # fmt: skip
    assert torch.equal(
        sd["lm_head.transform.LayerNorm.weight"], bert_state["cls.predictions.transform.LayerNorm.weight"]
    )
    assert torch.equal(sd["text_encoder.encoder.layer.11.output.dense.weight"],
                       bert_state["bert.encoder.layer.11.output.dense.weight"])  # fmt: skip
    assert_bert_init(cross_attention_tensors(model, "text_decoder"))


def test_from_a_local_directory(tmp_path: Path) -> None:
    bert = tiny_bert(seed=3)
    bert.save_pretrained(tmp_path / "bert")
    model = create_model("ve", model_preset("albef_tiny"))
    report = init_text_from_bert(model, tmp_path / "bert")
    assert report.source_layout == "hf:bert"
    assert torch.equal(model.text_encoder.encoder.layer[4].attention.output.dense.weight,
                       bert.bert.encoder.layer[4].attention.output.dense.weight)  # fmt: skip


def test_bert_model_naming_and_tf_layernorm_names(bert_state: dict[str, torch.Tensor]) -> None:
    plain = {k.removeprefix("bert."): v for k, v in bert_state.items() if k.startswith("bert.")}
    plain = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in plain.items()
    }
    model = create_model("retrieval", model_preset("albef_tiny"))
    init_text_from_bert(model, plain)
    assert torch.equal(
        model.text_encoder.embeddings.LayerNorm.weight, bert_state["bert.embeddings.LayerNorm.weight"]
    )


def test_bert_errors_list_keys_and_shapes(bert_state: dict[str, torch.Tensor]) -> None:
    model = create_model("retrieval", model_preset("albef_tiny"))
    broken = dict(bert_state)
    del broken["bert.encoder.layer.3.output.dense.weight"]
    broken["bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as err:
        init_text_from_bert(model, broken)
    assert err.value.missing == ["bert.encoder.layer.3.output.dense.weight"]
    assert err.value.unexpected == ["bert.encoder.layer.0.attention.self.rotary.weight"]
    wide = dict(tiny_bert(hidden=48).state_dict())
    with pytest.raises(
        CheckpointMismatchError,
        match=r"bert\.embeddings\.word_embeddings\.weight -> text_encoder\.embeddings\.word_embeddings\.weight: checkpoint \(1000, 48\) vs model \(1000, 32\)",
    ):
        init_text_from_bert(model, wide)
    untied = dict(bert_state, **{"cls.predictions.decoder.weight": torch.zeros(1000, 32)})
    with pytest.raises(CheckpointMismatchError, match="untied"):
        init_text_from_bert(create_model("pretrain", model_preset("albef_tiny")), untied)


# -- vision ---------------------------------------------------------------------------------------------------
def timm_vit_state(img_size: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    vit = VisionTransformer(
        img_size=img_size, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=10
    )
    with torch.no_grad():
        for param in vit.parameters():
            param.normal_()
    return dict(vit.state_dict())


@pytest.mark.parametrize("as_file", [False, True])
def test_vision_from_timm_vit(tmp_path: Path, as_file: bool) -> None:
    state = timm_vit_state()  # 4x4 grid -> the model's 3x3 (48 px)
    source: object = state
    if as_file:
        torch.save({"model": state}, tmp_path / "deit.pth")  # DeiT releases wrap the weights in 'model'
        source = tmp_path / "deit.pth"
    model = create_model("pretrain", model_preset("albef_tiny"))
    report = init_vision_from_deit(model, source)  # type: ignore[arg-type]
    assert report.unexpected == ["head.weight", "head.bias"]
    assert report.resized == [("pos_embed", (1, 17, 32), (1, 10, 32))]
    assert torch.equal(model.visual_encoder.pos_embed, resize_pos_embed(state["pos_embed"], 9))
    assert torch.equal(model.visual_encoder.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])
    assert torch.equal(model.visual_encoder_m.blocks[1].mlp.fc2.bias, state["blocks.1.mlp.fc2.bias"])
    assert report.teachers_copied == ["visual_encoder"]


def test_vision_errors_list_keys() -> None:
    state = timm_vit_state(48)
    state["dist_token"] = torch.zeros(1, 1, 32)  # a distilled DeiT does not fit
    del state["norm.weight"]
    with pytest.raises(CheckpointMismatchError) as err:
        init_vision_from_deit(create_model("ve", model_preset("albef_tiny")), state)
    assert err.value.missing == ["norm.weight"] and err.value.unexpected == ["dist_token"]
