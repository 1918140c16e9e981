"""``runtime.compile``: the compiled encoders and fusion layers give the eager outputs, under the same names."""

from __future__ import annotations

import pytest
import torch

from albef.config import load_config
from albef.engine.compile import compile_model
from albef.models import create_model
from tests.engine import TINY_OVERRIDES


@pytest.mark.slow  # inductor builds C++ kernels for every layer: about a minute on 2 cores
def test_compiled_model_matches_eager_and_keeps_its_state_dict() -> None:
    cfg = load_config("synthetic_pretrain", [o for o in TINY_OVERRIDES if not o.startswith("data.")])
    torch.manual_seed(0)
    model = create_model("pretrain", cfg.model).eval()
    image = torch.randn(2, 3, cfg.model.vision.image_res, cfg.model.vision.image_res)
    ids = torch.randint(5, cfg.model.text.vocab_size, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        eager_image = model.encode_image(image)
        eager_text = model.encode_text(ids, mask)
        eager_fused = model.fuse(eager_text, eager_image.embeds)
    keys = list(model.state_dict())
    assert compile_model(model) == 2 + 2 * cfg.model.text.num_layers  # student + teacher ViT, every layer
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        image_out = model.encode_image(image)
        text_out = model.encode_text(ids, mask)
        fused = model.fuse(text_out, image_out.embeds)
    torch.testing.assert_close(image_out.embeds, eager_image.embeds, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(text_out.feat, eager_text.feat, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fused, eager_fused, rtol=1e-4, atol=1e-5)


def test_compile_model_compiles_every_encoder_and_layer_with_the_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, mode="default": calls.append(mode))
    cfg = load_config("synthetic_pretrain", [o for o in TINY_OVERRIDES if not o.startswith("data.")])
    model = create_model("pretrain", cfg.model)
    assert compile_model(model, "max-autotune") == len(calls) == 2 + 2 * cfg.model.text.num_layers
    assert set(calls) == {"max-autotune"}
