"""FLOPs per item, peak dense FLOP/s per device and precision, and model FLOPs utilisation (MFU).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one real call: matrix products,
convolutions and attention count (a multiply-add is 2 FLOPs); elementwise work, softmax and LayerNorm do
not, as is usual for MFU. PyTorch's counter knows the CUDA attention kernels but not the CPU one that
``scaled_dot_product_attention`` dispatches to (``_scaled_dot_product_flash_attention_for_cpu``), so a
formula for that op is added here: the same two products the plain-math path counts.

Peak numbers are the dense (no structured sparsity) tensor-core figures of NVIDIA's datasheets; the
datasheets print the sparse figure with an asterisk, which is twice the dense one. ``fp32`` is the plain
CUDA-core rate; ``tf32`` applies when fp32 matrix products may use TF32 tensor cores
(``torch.backends.cuda.matmul.allow_tf32``), see :func:`compute_precision`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

TERA = 1e12

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5 / PCIe columns): FP32 67 / 51; TF32 989 / 756,
    # BF16 and FP16 1,979 / 1,513 "with sparsity" -> dense TF32 494.5 / 378, BF16 and FP16 989.5 / 756.5.
    "H100 SXM": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5},
    # Same datasheet, H100 NVL column: FP32 60; TF32 835, BF16/FP16 1,671 with sparsity.
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    # NVIDIA H200 Tensor Core GPU datasheet (H200 SXM column): the H100 SXM compute rates.
    "H200": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
    # Same datasheet, H200 NVL column: the H100 NVL compute rates.
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    # NVIDIA A100 Tensor Core GPU datasheet (SXM and PCIe, 40 and 80 GB alike): FP32 19.5; TF32 156,
    # BF16/FP16 312 dense (312 / 624 with sparsity).
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
}
"""Peak dense TFLOP/s by device family and compute precision (``fp32``, ``tf32``, ``bf16``, ``fp16``)."""

DEVICE_PATTERNS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("h200", "nvl"), "H200 NVL"),
    (("h200",), "H200"),
    (("h100", "nvl"), "H100 NVL"),
    (("h100", "pcie"), "H100 PCIe"),
    (("h100",), "H100 SXM"),  # "NVIDIA H100 80GB HBM3" is the SXM5 part
    (("a100",), "A100"),
)
"""Lower-case substrings of ``torch.cuda.get_device_name`` -> :data:`PEAK_TFLOPS` key; first match wins."""

PRECISION_COMPUTE = {
    "fp32": "fp32",
    "tf32": "tf32",
    "cast_bf16": "bf16",
    "amp_bf16": "bf16",
    "cast_fp16": "fp16",
    "amp_fp16": "fp16",
    "bf16": "bf16",  # the weight-cast names of reports written before cast_* existed
    "fp16": "fp16",
}
"""Precision names (the trainer's and the benchmark's) -> the compute precision whose peak applies."""


# -- counting -------------------------------------------------------------------------------------------------
def _sdpa_flops(
    query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: Any, **kwargs: Any
) -> int:
    """``Q K^T`` and ``P V`` of attention on (B, h, L, d) queries and (B, h, S, d) keys/values."""
    *batch, length, head_dim = query_shape
    source = key_shape[-2]
    value_dim = value_shape[-1]
    heads = 1
    for size in batch:
        heads *= size
    return 2 * heads * length * source * head_dim + 2 * heads * length * source * value_dim


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas of the ops PyTorch's counter does not know (those that exist in this torch)."""
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if cpu_sdpa is None else {cpu_sdpa: _sdpa_flops}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (see the module docstring for what is counted)."""
    with FlopCounterMode(display=False, custom_mapping=_extra_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_per_item(fn: Callable[[], object], items: int) -> float:
    """FLOPs of one call of ``fn`` divided by the ``items`` it processes."""
    if items < 1:
        raise ValueError(f"items must be >= 1, got {items}")
    return count_flops(fn) / items


# -- peaks and utilisation ------------------------------------------------------------------------------------
def compute_precision(precision: str, allow_tf32: bool = False) -> str:
    """The compute precision of a precision name: ``fp32`` becomes ``tf32`` when TF32 matmuls are allowed."""
    if precision not in PRECISION_COMPUTE:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISION_COMPUTE)}")
    compute = PRECISION_COMPUTE[precision]
    return "tf32" if compute == "fp32" and allow_tf32 else compute


def device_family(device_name: str) -> str | None:
    """The :data:`PEAK_TFLOPS` key of a device name (``"NVIDIA H100 80GB HBM3"`` -> ``"H100 SXM"``)."""
    name = device_name.lower()
    for parts, family in DEVICE_PATTERNS:
        if all(part in name for part in parts):
            return family
    return None


def peak_flops(device_name: str, precision: str) -> float | None:
    """Peak dense FLOP/s of the device at ``precision``; ``None`` for devices not in the table (CPUs)."""
    family = device_family(device_name)
    if family is None:
        return None
    return PEAK_TFLOPS[family][compute_precision(precision)] * TERA


def mfu(achieved_flops_per_s: float, device_name: str, precision: str) -> float | None:
    """Model FLOPs utilisation: achieved / peak dense FLOP/s; ``None`` when the peak is unknown.

    Args:
        achieved_flops_per_s: Counted FLOPs per item times items per second.
        device_name: ``torch.cuda.get_device_name`` (or a CPU model, which gives ``None``).
        precision: ``fp32``, ``tf32``, ``bf16``, ``amp_bf16``, ``fp16`` or ``amp_fp16``.
    """
    peak = peak_flops(device_name, precision)
    return None if peak is None else achieved_flops_per_s / peak
