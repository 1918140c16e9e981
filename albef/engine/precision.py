"""Resolve the device and the precision once: autocast context, parameter dtype and gradient scaler.

| precision | parameters | compute | GradScaler |
|---|---|---|---|
| ``fp32`` | fp32 | fp32 | no |
| ``amp_bf16`` (alias ``bf16`` for evaluation) | fp32 | bf16 autocast | no |
| ``amp_fp16`` (alias ``fp16``) | fp32 | fp16 autocast (CUDA) | yes |

On CPU autocast supports bf16; fp16 autocast on CPU is refused with a clear message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from albef.errors import ConfigError, DeviceError

AUTOCAST_DTYPES = {
    "amp_bf16": torch.bfloat16,
    "amp_fp16": torch.float16,
}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"runtime.device={name!r}, but this machine has no usable CUDA device "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use runtime.device=cpu or auto"
        )
    return device


@dataclass
class Precision:
    """What a precision name means on a device.

    Attributes:
        name: The config value.
        device: The device.
        autocast_dtype: The autocast compute dtype, or ``None`` for plain fp32.
    """

    name: str
    device: torch.device
    autocast_dtype: torch.dtype | None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context (a no-op context for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 autocast, else ``None``."""
        if self.autocast_dtype is torch.float16:
            return torch.amp.GradScaler(self.device.type)
        return None


def resolve_precision(name: str, device: torch.device) -> Precision:
    """Map a precision name to its :class:`Precision` on ``device``."""
    if name == "fp32":
        return Precision(name, device, None)
    if name not in AUTOCAST_DTYPES:
        raise ConfigError(f"unknown runtime.precision {name!r}; valid: fp32, {', '.join(AUTOCAST_DTYPES)}")
    dtype = AUTOCAST_DTYPES[name]
    if dtype is torch.float16 and device.type == "cpu":
        raise DeviceError(
            f"runtime.precision={name} (fp16 autocast) needs a CUDA device, and this run is on the CPU; use "
            "amp_bf16 or fp32"
        )
    return Precision(name, device, dtype)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), where bf16 autocast pays off.

    Elsewhere oneDNN emulates bf16 and autocast is slower than fp32.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def synchronize(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None
