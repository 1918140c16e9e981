"""Host-to-device copies that never make the host wait for the device."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T", Tensor, None)


def to_device(tensor: T, device: torch.device) -> T:
    """``tensor`` on ``device``; to CUDA from page-locked memory without blocking the host (the copy is queued on
    the current stream, before the kernels that read it). ``None`` and tensors already there pass unchanged."""
    if tensor is None or tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
