"""Result rows and the tolerance comparison of recomputed values with reference values.

The tolerances are those the reference README recommends: float tensors must satisfy
``|mine - ref| <= atol + rtol * |ref|`` elementwise (``torch.isclose``); integer and boolean tensors must be
equal. Nested dicts and lists are compared leaf by leaf, and a row reports the largest absolute difference
over every leaf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

Status = Literal["pass", "fail", "skipped"]

FLOAT_ATOL = 1e-5
FLOAT_RTOL = 1e-4


@dataclass(frozen=True)
class CheckRow:
    """One line of the verification table.

    Attributes:
        file: Fixture file name (``pretrain.pt``).
        output: Which output or check (``sim_i2t``, ``conversions.vqa``, ``state_dict``).
        max_abs_diff: Largest absolute difference to the reference; ``None`` when nothing was compared.
        status: ``pass``, ``fail`` or ``skipped``.
        detail: Why it failed or was skipped, or what was compared.
    """

    file: str
    output: str
    max_abs_diff: float | None
    status: Status
    detail: str = ""

    @property
    def status_text(self) -> str:
        """The table's status cell: ``pass``, ``FAIL`` or ``skipped: <reason>``."""
        if self.status == "skipped":
            return f"skipped: {self.detail}" if self.detail else "skipped"
        return "pass" if self.status == "pass" else "FAIL"


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one recomputed value with its reference.

    Attributes:
        max_abs_diff: Largest absolute difference over every leaf (``inf`` when shapes or keys differ).
        passed: Every leaf within tolerance (integers and booleans exact).
        detail: The first problem found, or an empty string.
    """

    max_abs_diff: float
    passed: bool
    detail: str = ""


def compare(mine: Any, ref: Any, atol: float = FLOAT_ATOL, rtol: float = FLOAT_RTOL) -> Comparison:
    """Compare a recomputed value with the reference (tensors, numbers, or dicts/lists of them).

    Args:
        mine: The recomputed value.
        ref: The reference value; its dtype decides between exact and tolerance comparison.
        atol: Absolute tolerance for floating-point leaves.
        rtol: Relative tolerance for floating-point leaves.

    Returns:
        The :class:`Comparison`.
    """
    if isinstance(ref, Mapping):
        return _compare_mapping(mine, ref, atol, rtol)
    if isinstance(ref, Sequence) and not isinstance(ref, str | bytes):
        return _compare_mapping(_as_mapping(mine), _as_mapping(ref), atol, rtol)
    return _compare_tensor(_as_tensor(mine), _as_tensor(ref), atol, rtol)


def _as_mapping(value: Any) -> Any:
    """A list as a mapping from index to item (anything else unchanged, so a type mismatch is reported)."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return {str(i): item for i, item in enumerate(value)}
    return value


def _as_tensor(value: Any) -> Tensor:
    """A tensor view of a tensor or a Python number (bools stay bools, ints stay integers)."""
    return value.detach().cpu() if isinstance(value, Tensor) else torch.tensor(value)


def _compare_mapping(mine: Any, ref: Mapping[str, Any], atol: float, rtol: float) -> Comparison:
    """Leafwise comparison of two mappings with the same keys."""
    if not isinstance(mine, Mapping):
        return Comparison(float("inf"), False, f"expected a mapping, got {type(mine).__name__}")
    if set(mine) != set(ref):
        missing, extra = sorted(set(ref) - set(mine)), sorted(set(mine) - set(ref))
        return Comparison(float("inf"), False, f"keys differ: missing {missing}, unexpected {extra}")
    worst, problems = 0.0, []
    for key in ref:
        result = compare(mine[key], ref[key], atol, rtol)
        worst = max(worst, result.max_abs_diff)
        if not result.passed:
            problems.append(f"{key}: {result.detail}")
    return Comparison(worst, not problems, "; ".join(problems))


def _compare_tensor(mine: Tensor, ref: Tensor, atol: float, rtol: float) -> Comparison:
    """Exact comparison for integer/bool references, ``isclose`` for floating-point ones."""
    if mine.shape != ref.shape:
        return Comparison(float("inf"), False, f"shape {tuple(mine.shape)} != reference {tuple(ref.shape)}")
    if ref.numel() == 0:
        return Comparison(0.0, True)
    diff = (mine.double() - ref.double()).abs()
    worst = float(diff.max())
    if not (ref.is_floating_point() or ref.is_complex()):
        mismatches = int((mine != ref).sum())
        if mismatches == 0:
            return Comparison(worst, True)
        return Comparison(worst, False, f"{mismatches} of {ref.numel()} entries differ (exact)")
    close = torch.isclose(mine.double(), ref.double(), rtol=rtol, atol=atol)
    bad = int((~close).sum())
    if bad == 0:
        return Comparison(worst, True)
    return Comparison(worst, False, f"{bad} of {ref.numel()} entries outside atol={atol:g} rtol={rtol:g}")
