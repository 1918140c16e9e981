"""Momentum (EMA) twins and the feature queue, shared by every task model.

A task model lists its momentum pairs as attribute names, e.g. ``("visual_encoder", "text_encoder")``; the
teacher of ``visual_encoder`` is ``visual_encoder_m``. The teacher receives no gradient and is updated as
``theta_m <- m * theta_m + (1 - m) * theta`` over ``parameters()`` (buffers untouched), as the official code.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MOMENTUM_SUFFIX = "_m"


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` to serve as its EMA teacher."""
    twin = copy.deepcopy(module)
    for param in twin.parameters():
        param.requires_grad_(False)
    return twin


def parameter_pairs(model: nn.Module, names: Sequence[str]) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(online, teacher)`` parameter pairs of the named modules, each teacher tensor once.

    A tensor shared between two teacher modules (the MLM decoder tied to the word embeddings) is yielded
    only the first time, so an EMA step never updates it twice.
    """
    seen: set[int] = set()
    for name in names:
        online, teacher = getattr(model, name), getattr(model, name + MOMENTUM_SUFFIX)
        for p, p_m in zip(online.parameters(), teacher.parameters(), strict=True):
            if id(p_m) not in seen:
                seen.add(id(p_m))
                yield p, p_m


@torch.no_grad()
def copy_params(model: nn.Module, names: Sequence[str]) -> None:
    """Set every teacher equal to its online module (the official ``copy_params``)."""
    for p, p_m in parameter_pairs(model, names):
        p_m.copy_(p)
        p_m.requires_grad_(False)


@torch.no_grad()
def momentum_update(model: nn.Module, names: Sequence[str], momentum: float) -> None:
    """EMA step for every pair: ``p_m = p_m * m + p * (1 - m)``."""
    pairs = list(parameter_pairs(model, names))
    online = [p.detach() for p, _ in pairs]
    teacher = [p_m for _, p_m in pairs]
    if teacher:
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, torch._foreach_mul(online, 1.0 - momentum))


class FeatureQueue(nn.Module):
    """Queues of momentum image/text features (and image ids) for ITC, with a write pointer.

    Args:
        dim: Feature width (``embed_dim``).
        size: Number of queue columns; must be a multiple of the global batch size.
        with_idx: Also keep ``idx_queue`` (retrieval: image ids, initialised to -100 = "matches nothing").
    """

    image_queue: Tensor
    text_queue: Tensor
    idx_queue: Tensor
    queue_ptr: Tensor

    def __init__(self, dim: int, size: int, with_idx: bool = False) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("image_queue", F.normalize(torch.randn(dim, size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(dim, size), dim=0))
        if with_idx:
            self.register_buffer("idx_queue", torch.full((1, size), -100, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.with_idx = with_idx

    def check_batch(self, global_batch: int) -> None:
        """Raise if ``global_batch`` does not divide the queue size (checked at start-up, not mid-run)."""
        if global_batch <= 0 or self.size % global_batch:
            raise ValueError(
                f"queue_size {self.size} must be a multiple of the global batch size {global_batch} "
                "(per-device batch x world size)"
            )

    @torch.no_grad()
    def enqueue(self, image_feat: Tensor, text_feat: Tensor, idx: Tensor | None = None) -> None:
        """Write (B, D) momentum features (already gathered over ranks) at the pointer and advance it."""
        batch = image_feat.shape[0]
        self.check_batch(batch)
        ptr = int(self.queue_ptr)
        self.image_queue[:, ptr : ptr + batch] = image_feat.T
        self.text_queue[:, ptr : ptr + batch] = text_feat.T
        if self.with_idx:
            if idx is None:
                raise ValueError("this queue keeps image ids: pass idx")
            self.idx_queue[:, ptr : ptr + batch] = idx.view(1, -1)
        self.queue_ptr[0] = (ptr + batch) % self.size
