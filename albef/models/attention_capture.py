"""Opt-in capture of one attention layer's probabilities and their gradient (what Grad-CAM needs).

The ordinary forward runs fused attention (``scaled_dot_product_attention``), which never materialises the
probabilities. Inside :func:`capture_cross_attention` or :func:`capture_vit_attention` the one chosen layer runs
an explicit softmax instead and keeps the probabilities (after the softmax, before dropout, as the official
``save_attention_map``) and, after a backward pass, their gradient (the official ``save_attn_gradients``).
Nothing is checked in any layer's forward outside the ``with`` block: the capture swaps the layer's kernel for
the block's duration and restores it on exit.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from albef.models.bert import MultiHeadAttention
from albef.models.vision import VisionEncoder


@dataclass
class AttentionCapture:
    """What a captured layer saw in its last forward: ``probs`` (B, h, Lq, S) and, after a backward pass, ``grad``
    (the same shape)."""

    probs: Tensor | None = None
    grad: Tensor | None = None
    _hooks: list[object] = field(default_factory=list, repr=False)

    def keep(self, probs: Tensor) -> None:
        """Record ``probs`` and, when it takes part in autograd, its gradient once computed."""
        self.probs, self.grad = probs, None
        if probs.requires_grad:
            probs.register_hook(self._keep_grad)

    def _keep_grad(self, grad: Tensor) -> None:
        self.grad = grad

    @property
    def ready(self) -> tuple[Tensor, Tensor]:
        """``(probs, grad)``, detached; an error when no forward and backward ran inside the capture."""
        if self.probs is None or self.grad is None:
            raise RuntimeError("no attention captured: run a forward and a backward inside the capture block")
        return self.probs.detach(), self.grad.detach()


@contextlib.contextmanager
def capture_cross_attention(module: MultiHeadAttention) -> Iterator[AttentionCapture]:
    """Inside the block, ``module`` (a fusion layer's ``crossattention.self``) computes its attention with an
    explicit softmax and records the probabilities and their gradient."""
    capture = AttentionCapture()

    def attend(self: MultiHeadAttention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        scores = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
        if mask is not None:
            scores = scores + mask.to(q.dtype)
        probs = scores.softmax(dim=-1)
        capture.keep(probs)
        return F.dropout(probs, p=self.dropout if self.training else 0.0) @ v

    module.attend = types.MethodType(attend, module)  # type: ignore[method-assign]
    try:
        yield capture
    finally:
        del module.attend  # back to the class's fused kernel


@contextlib.contextmanager
def capture_vit_attention(encoder: VisionEncoder, block: int) -> Iterator[AttentionCapture]:
    """Inside the block, ViT ``block`` of ``encoder`` runs timm's explicit-softmax path, and the probabilities
    entering its attention dropout are recorded with their gradient (the official ``register_blk``)."""
    if not -len(encoder.blocks) <= block < len(encoder.blocks):
        raise IndexError(f"ViT block {block} is out of range: the encoder has {len(encoder.blocks)} blocks")
    attention: Any = encoder.blocks[block].attn
    drop = getattr(attention, "attn_drop", None)
    if not isinstance(drop, nn.Module) or not hasattr(attention, "fused_attn"):
        raise TypeError(f"cannot capture {type(attention).__name__}: not timm's Attention")
    capture = AttentionCapture()
    handle = drop.register_forward_pre_hook(lambda _module, args: capture.keep(args[0]))
    encoder.explicit_attention_blocks = frozenset({block % len(encoder.blocks)})
    try:
        yield capture
    finally:
        handle.remove()
        encoder.explicit_attention_blocks = frozenset()
