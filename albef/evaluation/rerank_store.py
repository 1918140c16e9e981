"""Where the re-rank's features live while the fusion calls run: on the device, or in host memory.

- **device** (resident): the image tokens and the texts' first-fusion-layer states are copied to the device
  once; each call gathers its rows there with ``index_select`` on indices that are already on the device.
- **host**: the features stay in host memory (they do not fit on the device); each call's rows are gathered on
  the host into pinned memory and copied on a second CUDA stream while the previous call computes, and the
  call waits for its copy on the device only (an event), never on the host.

:func:`choose_residency` picks one from the device's free memory and the evaluation's :class:`MemoryPlan`.
On a CPU both are the same memory; ``device`` is then chosen, and ``host`` runs the same gathers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from albef.evaluation.memory_plan import MemoryPlan
from albef.evaluation.rerank_layout import CallPlan

RESIDENCIES: tuple[str, ...] = ("auto", "device", "host")

RESIDENT_FRACTION = 0.8
"""Share of the device's free memory the resident features, the ITC matrix and one call may take together."""


def choose_residency(plan: MemoryPlan, device: torch.device, requested: str = "auto") -> dict[str, Any]:
    """Where the features go (``mode``), and why: the bytes needed and the device's free bytes (CUDA).

    ``auto`` keeps them on the device when the image tokens, text states, ITC matrix, the sort workspace of
    the top-k and one fusion call fit in :data:`RESIDENT_FRACTION` of its free memory.
    """
    if requested not in RESIDENCIES:
        raise ValueError(f"residency must be one of {', '.join(RESIDENCIES)}, got {requested!r}")
    needed = plan.image_tokens + plan.text_states + 2 * plan.itc_matrix + plan.call_bytes
    record: dict[str, Any] = {"requested": requested, "needed_mib": round(needed / 2**20, 1)}
    if device.type != "cuda":
        return {**record, "mode": "device" if requested == "auto" else requested}
    free, total = torch.cuda.mem_get_info(device)
    record.update(free_mib=round(free / 2**20, 1), total_mib=round(total / 2**20, 1))
    if requested != "auto":
        return {**record, "mode": requested}
    return {**record, "mode": "device" if needed <= RESIDENT_FRACTION * free else "host"}


@dataclass
class Staged:
    """One call's image tokens (U, S, Dv) and text-token states (T, H) on the device, float32, and the event
    their copy completes (host residency on CUDA)."""

    tokens: Tensor
    states: Tensor
    copied: Any = None

    def ready(self) -> tuple[Tensor, Tensor]:
        """The tensors, after making the current stream wait for their copy (a device-side wait)."""
        if self.copied is not None:
            stream = torch.cuda.current_stream(self.tokens.device)
            stream.wait_event(self.copied)
            self.tokens.record_stream(stream)
            self.states.record_stream(stream)
        return self.tokens.float(), self.states.float()


class RerankFeatures:
    """The image tokens (N_i, S, Dv) and flattened text states (N_t * L, H) that the fusion calls read.

    Args:
        images: Image tokens, any float dtype (the feature dtype is kept; calls cast their rows to float32).
        texts: Text states, flattened to (N_t * L, H); a view of a buffer that may still be filled in.
        device: Where the calls run.
        mode: ``device`` (copied there once) or ``host`` (gathered and copied per call).
    """

    def __init__(self, images: Tensor, texts: Tensor, device: torch.device, mode: str) -> None:
        if mode not in ("device", "host"):
            raise ValueError(f"mode must be 'device' or 'host', got {mode!r}")
        self.device, self.mode = device, mode
        home = device if mode == "device" else torch.device("cpu")
        self.images, self.texts = images.to(home), texts
        self.copy_stream = torch.cuda.Stream(device) if mode == "host" and device.type == "cuda" else None

    def stage(self, host: CallPlan, on_device: CallPlan) -> Staged:
        """Start fetching a call's rows: on the device, a gather; from the host, a pinned copy on the side stream."""
        if self.mode == "device":
            return Staged(
                self.images.index_select(0, on_device.images), self.texts.index_select(0, on_device.tokens)
            )
        if self.copy_stream is None:  # a CPU run: host memory is the device's
            return Staged(self.images.index_select(0, host.images), self.texts.index_select(0, host.tokens))
        pinned = [
            torch.index_select(
                source, 0, index, out=_pinned((index.shape[0], *source.shape[1:]), source.dtype)
            )
            for source, index in ((self.images, host.images), (self.texts, host.tokens))
        ]
        with torch.cuda.stream(self.copy_stream):
            tokens, states = (t.to(self.device, non_blocking=True) for t in pinned)
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
        return Staged(tokens, states, copied)


def _pinned(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A page-locked host buffer (from PyTorch's caching host allocator, which keeps it until its copy is done)."""
    return torch.empty(shape, dtype=dtype, pin_memory=True)
