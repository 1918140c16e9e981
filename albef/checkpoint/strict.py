"""Strict state-dict loading: every missing or unexpected key is either documented or an error.

``torch.nn.Module.load_state_dict(strict=False)`` (what the official scripts use) silently drops what does
not fit. :func:`load_state_dict_strict` instead takes the *documented* sets of keys a conversion is allowed
to miss or leave over (exact keys or ``fnmatch`` patterns), raises :class:`CheckpointMismatchError` listing
everything else, and returns the expected ones in a :class:`LoadReport`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from albef.errors import CheckpointError

MAX_LISTED = 100
"""Keys listed per category in an error message (the exception's attributes keep all of them)."""


@dataclass
class LoadReport:
    """What a strict load did. Key names are ours (see ``albef.checkpoint.layout.official_keys``).

    Attributes:
        loaded: Model keys that received a checkpoint value.
        missing: Model keys absent from the checkpoint (all of them documented as expected).
        unexpected: Checkpoint keys the model does not have (all documented as expected; not loaded).
        source_layout: ``'<official|ours>:<task>'`` of the checkpoint, when known.
        conversion: The conversion applied, e.g. ``'pretrain->retrieval'`` or ``'direct'``.
        resized: Position embeddings resized: ``(key, old_shape, new_shape)``.
        teachers_copied: Teacher modules (``*_m``) absent from the checkpoint and copied from the loaded
            online weights after loading.
        teachers_kept: Teacher modules absent from the checkpoint that kept their pre-load values
            (``parity=True``: the official order, copy before load).
        notes: Human-readable remarks (official quirks reproduced or fixed).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    source_layout: str = ""
    conversion: str = ""
    resized: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    teachers_copied: list[str] = field(default_factory=list)
    teachers_kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts and what was converted."""
        parts = [
            f"{self.conversion or 'load'} from {self.source_layout or 'state dict'}",
            f"{len(self.loaded)} loaded",
            f"{len(self.missing)} missing (expected)",
            f"{len(self.unexpected)} unexpected (expected)",
        ]
        if self.resized:
            parts.append("resized " + ", ".join(k for k, _, _ in self.resized))
        if self.teachers_copied:
            parts.append("teachers copied after load: " + ", ".join(self.teachers_copied))
        if self.teachers_kept:
            parts.append("teachers kept pre-load values: " + ", ".join(self.teachers_kept))
        return "; ".join(parts)


def _listing(title: str, lines: Sequence[str]) -> str:
    shown = [f"    {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"    ... and {len(lines) - MAX_LISTED} more")
    return f"  {title} ({len(lines)}):\n" + "\n".join(shown)


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit a model: keys are missing, unexpected, mis-shaped or inconsistently tied.

    Attributes:
        missing: Model keys absent from the checkpoint and not documented as expected.
        unexpected: Checkpoint keys the model lacks, not documented as expected.
        mismatched: ``key: checkpoint (shape) vs model (shape)`` lines (also dtype-kind and tie problems).
    """

    def __init__(
        self,
        context: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[str] = (),
    ) -> None:
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        sections = [
            _listing(title, lines)
            for title, lines in (
                ("missing keys", self.missing),
                ("unexpected keys", self.unexpected),
                ("mismatched tensors", self.mismatched),
            )
            if lines
        ]
        super().__init__(f"{context}:\n" + "\n".join(sections))


def matches(key: str, patterns: Iterable[str]) -> bool:
    """Whether ``key`` equals one of ``patterns`` or matches it as an ``fnmatch`` glob."""
    return any(key == p or fnmatch.fnmatchcase(key, p) for p in patterns)


def tie_groups(model: nn.Module) -> list[list[str]]:
    """State-dict keys that name one tensor in ``model`` (tied decoder, shared NLVR² key/value), 2+ per group."""
    groups: dict[int, list[str]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(key)
    return [keys for keys in groups.values() if len(keys) > 1]


def _tensor_problems(
    model: nn.Module, state_dict: Mapping[str, Tensor], own: Mapping[str, Tensor]
) -> list[str]:
    """Shape, dtype-kind and tie consistency problems of the keys both dicts have."""
    problems = []
    for key, target in own.items():
        value = state_dict.get(key)
        if value is None:
            continue
        if not isinstance(value, Tensor):
            problems.append(f"{key}: checkpoint value is a {type(value).__name__}, not a tensor")
        elif value.shape != target.shape:
            problems.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target.shape)}")
        elif value.dtype.is_floating_point != target.dtype.is_floating_point:
            problems.append(f"{key}: checkpoint dtype {value.dtype} vs model {target.dtype}")
    if problems:
        return problems
    for keys in tie_groups(model):
        present = [k for k in keys if k in state_dict]
        first = present[0] if present else None
        for other in present[1:]:
            if first is not None and not torch.equal(state_dict[first], state_dict[other]):
                problems.append(
                    f"{first} and {other} are one tensor in the model but differ in the checkpoint"
                )
    return problems


def check_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    expected_missing: Iterable[str] = (),
    expected_unexpected: Iterable[str] = (),
    context: str = "checkpoint does not fit the model",
) -> LoadReport:
    """Validate ``state_dict`` against ``model`` without loading anything (see :func:`load_state_dict_strict`).

    Returns:
        The :class:`LoadReport` a load would produce.

    Raises:
        CheckpointMismatchError: As :func:`load_state_dict_strict`.
    """
    expected_missing, expected_unexpected = tuple(expected_missing), tuple(expected_unexpected)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad_missing = [k for k in missing if not matches(k, expected_missing)]
    bad_unexpected = [k for k in unexpected if not matches(k, expected_unexpected)]
    problems = _tensor_problems(model, state_dict, own)
    if bad_missing or bad_unexpected or problems:
        raise CheckpointMismatchError(context, bad_missing, bad_unexpected, problems)
    loaded = [k for k in own if k in state_dict]  # the model's order
    return LoadReport(loaded=loaded, missing=missing, unexpected=unexpected)


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    expected_missing: Iterable[str] = (),
    expected_unexpected: Iterable[str] = (),
    context: str = "checkpoint does not fit the model",
) -> LoadReport:
    """Load ``state_dict`` into ``model``, allowing only documented missing/unexpected keys.

    Args:
        model: Target module (values are copied into its tensors, ties preserved).
        state_dict: Keys in the model's own layout.
        expected_missing: Exact keys or ``fnmatch`` globs the checkpoint may lack (they keep their values).
        expected_unexpected: Exact keys or globs the model may lack (they are not loaded).
        context: First line of the error message (e.g. which file and conversion).

    Returns:
        A :class:`LoadReport` with ``loaded``, and the expected ``missing`` / ``unexpected`` keys.

    Raises:
        CheckpointMismatchError: Any undocumented missing or unexpected key (all listed), any shape
            mismatch (key and both shapes), a float/integer dtype mismatch, or two checkpoint values for one
            tied tensor that differ. Nothing is loaded in that case.
    """
    report = check_state_dict(
        model,
        state_dict,
        expected_missing=expected_missing,
        expected_unexpected=expected_unexpected,
        context=context,
    )
    result = model.load_state_dict({k: state_dict[k] for k in report.loaded}, strict=False)
    if set(result.missing_keys) != set(report.missing) or result.unexpected_keys:
        raise RuntimeError(  # our key accounting disagrees with torch's: a bug, never a user error
            f"internal error: torch reports missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return report
