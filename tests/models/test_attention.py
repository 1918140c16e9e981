"""The BERT stacks: SDPA equals plain math, the split passes equal the full pass, padding and causality."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from tests.models import images, set_fused, texts, tiny_model

WIDTH = 32  # albef_tiny: hidden size and image-token width
FP32_RTOL = 1.3e-6  # torch.testing's default for float32


def _image_tokens(batch: int, tokens: int = 10, seed: int = 3) -> Tensor:
    return torch.randn(batch, tokens, WIDTH, generator=torch.Generator().manual_seed(seed))


def _image_mask(batch: int, lengths: list[int], tokens: int = 10) -> Tensor:
    return (torch.arange(tokens)[None] < torch.tensor(lengths)[:, None]).long()[:batch]


def _both_paths(model: torch.nn.Module, fn: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
    assert set_fused(model, True) > 0
    with torch.no_grad():
        fused = fn()
    set_fused(model, False)
    with torch.no_grad():
        plain = fn()
    set_fused(model, True)
    return fused, plain


def _sdpa_cases() -> dict[str, tuple[str, Callable[[torch.nn.Module], Tensor]]]:
    """Hidden states (not vocabulary logits, whose scale would hide the comparison) of every attention use."""
    ids, mask = texts([12, 7, 4], seed=1)
    ctx, ctx_mask = _image_tokens(3), _image_mask(3, [10, 6, 3])
    states = torch.randn(3, 12, WIDTH, generator=torch.Generator().manual_seed(4))
    a_ids, a_mask = texts([5, 3, 4], seed=2)
    im0, im1 = images(3, seed=5), images(3, seed=6)
    return {
        "text": ("retrieval", lambda m: m.text_encoder.forward_text(ids, mask)),
        "fusion": ("retrieval", lambda m: m.text_encoder.forward_fusion(states, mask, ctx, ctx_mask)),
        "multimodal": ("retrieval", lambda m: m.text_encoder.forward_multimodal(ids, mask, ctx, ctx_mask)),
        "causal_decoder": ("vqa", lambda m: m.text_decoder.forward_multimodal(a_ids, a_mask, states, mask)),
        "nlvr_images": ("nlvr", lambda m: m.logits(im0, im1, ids, mask)),
        "nlvr_list_masks": (
            "nlvr",
            lambda m: m.text_encoder.forward_multimodal(ids, mask, [ctx, ctx.flip(1)], [ctx_mask, None]),
        ),
    }


@pytest.mark.parametrize("case", list(_sdpa_cases()))
def test_sdpa_equals_plain_math(case: str) -> None:
    task, fn = _sdpa_cases()[case]
    model = tiny_model(task)
    fused, plain = _both_paths(model, lambda: fn(model))
    # atol 1e-6 plus torch's float32 rtol: outputs reach |x| ~ 4, where a few ulps exceed 1e-6 alone.
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=FP32_RTOL)


def test_text_then_fusion_equals_multimodal() -> None:
    stack = tiny_model("retrieval").text_encoder
    ids, mask = texts([11, 8, 5], seed=1)
    ctx, ctx_mask = _image_tokens(3), _image_mask(3, [10, 9, 4])
    with torch.no_grad():
        split = stack.forward_fusion(stack.forward_text(ids, mask), mask, ctx, ctx_mask)
        full = stack.forward_multimodal(ids, mask, ctx, ctx_mask)
    torch.testing.assert_close(split, full, atol=0, rtol=0)


def test_model_fuse_equals_multimodal_pass() -> None:
    model = tiny_model("pretrain")
    image, (ids, mask) = images(2), texts([9, 6])
    with torch.no_grad():
        img = model.encode_image(image)
        fused = model.fuse(model.encode_text(ids, mask), img.embeds)
        full = model.text_encoder.forward_multimodal(ids, mask, img.embeds)
    torch.testing.assert_close(fused, full, atol=0, rtol=0)


def _padding_cases() -> dict[str, tuple[str, Callable[..., Tensor]]]:
    ctx, ctx_mask = _image_tokens(3), _image_mask(3, [10, 7, 5])
    states = torch.randn(3, 6, WIDTH, generator=torch.Generator().manual_seed(4))
    states_mask = _image_mask(3, [6, 4, 2], tokens=6)
    return {
        "text": ("retrieval", lambda m, ids, mask: m.text_encoder.forward_text(ids, mask)),
        "multimodal": (
            "retrieval",
            lambda m, ids, mask: m.text_encoder.forward_multimodal(ids, mask, ctx, ctx_mask),
        ),
        "causal_decoder": (
            "vqa",
            lambda m, ids, mask: m.text_decoder.forward_multimodal(ids, mask, states, states_mask),
        ),
        "nlvr": (
            "nlvr",
            lambda m, ids, mask: m.text_encoder.forward_multimodal(ids, mask, [ctx, -ctx], [ctx_mask, None]),
        ),
    }


@pytest.mark.parametrize("case", list(_padding_cases()))
def test_extra_padding_does_not_change_real_tokens(case: str) -> None:
    task, fn = _padding_cases()[case]
    model = tiny_model(task)
    lengths = [9, 6, 3]
    short_ids, short_mask = texts(lengths, seed=1)
    long_ids, long_mask = texts(lengths, pad_to=16, seed=1)
    assert torch.equal(long_ids[:, :9], short_ids) and int(long_mask.sum()) == sum(lengths)
    with torch.no_grad():
        short, long = fn(model, short_ids, short_mask), fn(model, long_ids, long_mask)
    real = short_mask.bool()
    torch.testing.assert_close(long[:, :9][real], short[real], atol=1e-5, rtol=0)


def test_padded_image_tokens_do_not_change_the_fusion() -> None:
    stack = tiny_model("retrieval").text_encoder
    ids, mask = texts([8, 5], seed=1)
    ctx = _image_tokens(2)
    padded = torch.cat([ctx, torch.randn(2, 4, WIDTH)], dim=1)
    padded_mask = torch.cat([torch.ones(2, 10), torch.zeros(2, 4)], dim=1).long()
    with torch.no_grad():
        plain = stack.forward_multimodal(ids, mask, ctx)
        with_pad = stack.forward_multimodal(ids, mask, padded, padded_mask)
    torch.testing.assert_close(with_pad, plain, atol=1e-5, rtol=0)


def test_causal_decoder_ignores_later_tokens() -> None:
    model = tiny_model("vqa")
    ids, mask = texts([6, 6], seed=2)
    states = torch.randn(2, 5, WIDTH, generator=torch.Generator().manual_seed(4))
    states_mask = torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        base = model.decoder_logits(ids, mask, states, states_mask)
        for t in range(1, ids.shape[1]):
            changed = ids.clone()
            changed[:, t] = torch.where(changed[:, t] == 500, 501, 500)
            logits = model.decoder_logits(changed, mask, states, states_mask)
            torch.testing.assert_close(logits[:, :t], base[:, :t], atol=1e-6, rtol=FP32_RTOL)
            assert not torch.allclose(logits[:, t], base[:, t]), f"position {t} should see its own token"


def test_bidirectional_encoder_sees_later_tokens() -> None:
    """The control for the causal test: the text encoder is not causal."""
    stack = tiny_model("retrieval").text_encoder
    ids, mask = texts([6, 6], seed=2)
    changed = ids.clone()
    changed[:, -1] = torch.where(changed[:, -1] == 500, 501, 500)
    with torch.no_grad():
        assert not torch.allclose(
            stack.forward_text(ids, mask)[:, 0], stack.forward_text(changed, mask)[:, 0]
        )
