"""The ViT image encoder and position-embedding resizing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from albef.config.schema import VisionConfig
from albef.models.vision import VisionEncoder, resize_pos_embed
from tests.models import images, tiny_model


def _pos_embed(patches: int, width: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 1 + patches, width, generator=torch.Generator().manual_seed(seed))


def test_encoder_returns_every_token() -> None:
    vit = tiny_model("retrieval").visual_encoder
    with torch.no_grad():
        out = vit(images(2))
    assert out.shape == (2, 1 + 9, 32) and vit.num_tokens == 10
    assert torch.isfinite(out).all()


def test_resize_is_identity_when_the_grid_matches() -> None:
    pos = _pos_embed(9)
    assert resize_pos_embed(pos, 9) is pos


@pytest.mark.parametrize(("old", "new"), [(9, 16), (16, 9), (4, 36)])
def test_resize_keeps_cls_and_matches_bicubic_interpolate(old: int, new: int) -> None:
    pos = _pos_embed(old, seed=old)
    out = resize_pos_embed(pos, new)
    assert out.shape == (1, 1 + new, 8)
    assert torch.equal(out[:, :1], pos[:, :1])
    side, new_side = int(old**0.5), int(new**0.5)
    grid = pos[:, 1:].reshape(1, side, side, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, new, 8), atol=0, rtol=0)


def test_resize_keeps_several_extra_tokens_and_dtype() -> None:
    pos = torch.randn(1, 2 + 9, 8, dtype=torch.float64)
    out = resize_pos_embed(pos, 16, num_extra_tokens=2)
    assert out.dtype == torch.float64 and out.shape == (1, 18, 8)
    assert torch.equal(out[:, :2], pos[:, :2])


@pytest.mark.parametrize(("rows", "patches"), [(1 + 8, 16), (1 + 9, 15)])
def test_resize_rejects_a_non_square_grid(rows: int, patches: int) -> None:
    with pytest.raises(ValueError, match="not a square grid"):
        resize_pos_embed(torch.zeros(1, rows, 8), patches)


def test_resize_matches_the_official_retrieval_conversion(reference_dir: Path) -> None:
    path = reference_dir / "official_tiny" / "pretrain.pt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    ref = torch.load(path, weights_only=True)
    source = ref["state_dict"]["visual_encoder.pos_embed"]
    converted = ref["conversions"]["retrieval"]["state_dict"]["visual_encoder.pos_embed"]
    assert source.shape == (1, 10, 32) and converted.shape == (1, 17, 32)
    torch.testing.assert_close(resize_pos_embed(source, 16), converted, atol=1e-6, rtol=0)


@pytest.mark.parametrize("std", [0.02, 0.25])
def test_position_embeddings_are_drawn_at_the_configured_std(std: float) -> None:
    cfg = VisionConfig(image_res=64, patch_size=4, width=64, depth=1, num_heads=2, pos_embed_std=std)
    torch.manual_seed(0)
    pos = VisionEncoder(cfg).pos_embed
    assert pos is not None and pos.shape == (1, 1 + 256, 64)
    assert float(pos.detach().std()) == pytest.approx(std, rel=0.02)
