"""Check our implementation against the official reference fixtures, as a registry of checks.

A *check* belongs to one fixture kind (``pretrain``, ``retrieval``, ``vqa``, ``nlvr``, ``ve``, ``grounding``) and turns a
:class:`FixtureContext` into :class:`~albef.verification.compare.CheckRow` s. Most checks recompute one entry
of the fixture's ``outputs`` and are registered with :func:`output_check`::

    @output_check("pretrain", "sim_i2t")
    def _sim_i2t(ctx: FixtureContext) -> Tensor: ...

Every entry of ``outputs`` that no registered check covers becomes a ``skipped: not implemented`` row, so a
later feature (the losses, for instance) adds its check by registering a function in a module listed in
:data:`CHECK_MODULES` — nothing here changes. Check names are ``<kind>.<name>`` (``albef verify-reference
--only``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from albef.registry import Registry
from albef.verification.compare import CheckRow, Status, compare
from albef.verification.fixtures import FixtureError, ReferenceFixture, build_reference_model, load_fixture

T = TypeVar("T")

CHECK_MODULES = (
    "albef.verification.outputs",
    "albef.verification.conversions",
    "albef.verification.losses",
    "albef.verification.retrieval",
    "albef.verification.vqa",
    "albef.verification.classify",
    "albef.verification.grounding",
)
"""Modules whose import registers checks; a new group of checks adds its module here."""

NOT_IMPLEMENTED = "not implemented"


class ReferenceDirError(ValueError):
    """The fixture directory is missing or holds no fixture file, or ``--only`` names nothing."""


class FixtureContext:
    """One fixture plus what its checks share: the model (built on first use) and memoised values.

    Args:
        fixture: The loaded fixture file.
    """

    def __init__(self, fixture: ReferenceFixture) -> None:
        self.fixture = fixture
        self._model: nn.Module | None = None
        self._model_error: Exception | None = None
        self._memo: dict[str, Any] = {}

    @property
    def file(self) -> str:
        """The fixture's file name, as shown in the table."""
        return self.fixture.path.name

    @property
    def model(self) -> nn.Module:
        """Our model with the fixture's weights loaded strictly (a build failure is raised to every user)."""
        if self._model_error is not None:
            # The first failure (the state_dict row) carries the full error; later users only point at it.
            raise RuntimeError(
                f"no model: {type(self._model_error).__name__} while building it (see state_dict)"
            )
        if self._model is None:
            try:
                self._model = build_reference_model(self.fixture)
            except Exception as err:
                self._model_error = err
                raise
        return self._model

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per fixture; later calls with the same ``key`` return the stored value."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def row(self, output: str, max_abs_diff: float | None, status: Status, detail: str = "") -> CheckRow:
        """A result row for this fixture's file."""
        return CheckRow(self.file, output, max_abs_diff, status, detail)


@dataclass(frozen=True)
class ReferenceCheck:
    """A registered check.

    Attributes:
        kind: The fixture kind it applies to.
        name: Its name within the kind (the output name for output checks).
        run: ``(ctx) -> rows``.
        covers: The ``outputs`` entries it accounts for (they get no "skipped" row).
    """

    kind: str
    name: str
    run: Callable[[FixtureContext], list[CheckRow]]
    covers: frozenset[str] = frozenset()

    @property
    def full_name(self) -> str:
        """``<kind>.<name>``, the registry key."""
        return f"{self.kind}.{self.name}"


CHECKS: Registry[ReferenceCheck] = Registry("reference check")


def rows_check(
    kind: str, name: str, covers: Iterable[str] = ()
) -> Callable[[Callable[[FixtureContext], list[CheckRow]]], Callable[[FixtureContext], list[CheckRow]]]:
    """Register ``fn(ctx) -> list[CheckRow]`` as the check ``<kind>.<name>``."""

    def wrap(fn: Callable[[FixtureContext], list[CheckRow]]) -> Callable[[FixtureContext], list[CheckRow]]:
        check = ReferenceCheck(kind, name, fn, frozenset(covers))
        CHECKS.add(check.full_name, check, help=_first_line(fn.__doc__))
        return fn

    return wrap


def output_check(
    kind: str, output: str
) -> Callable[[Callable[[FixtureContext], T]], Callable[[FixtureContext], T]]:
    """Register ``fn(ctx) -> value`` as the check of ``outputs[output]`` in fixtures of ``kind``.

    The value is compared with the reference by :func:`~albef.verification.compare.compare` (float tensors
    within the README tolerances, integer tensors exactly).
    """

    def wrap(fn: Callable[[FixtureContext], T]) -> Callable[[FixtureContext], T]:
        def run(ctx: FixtureContext) -> list[CheckRow]:
            if output not in ctx.fixture.outputs:
                return [ctx.row(output, None, "fail", "output missing from the fixture")]
            result = compare(fn(ctx), ctx.fixture.outputs[output])
            return [ctx.row(output, result.max_abs_diff, "pass" if result.passed else "fail", result.detail)]

        check = ReferenceCheck(kind, output, run, frozenset({output}))
        CHECKS.add(check.full_name, check, help=_first_line(fn.__doc__))
        return fn

    return wrap


def _first_line(doc: str | None) -> str:
    """The first line of a docstring (the registry's description)."""
    return (doc or "").strip().split("\n", 1)[0]


def load_checks() -> None:
    """Import every module of :data:`CHECK_MODULES` so that its checks are registered."""
    for module in CHECK_MODULES:
        importlib.import_module(module)


def checks_for(kind: str) -> list[ReferenceCheck]:
    """The registered checks of a fixture kind, sorted by name."""
    return [check for check in (CHECKS.get(n) for n in CHECKS.names()) if check.kind == kind]


def fixture_paths(directory: Path) -> list[Path]:
    """The fixture files (``*.pt``) of ``directory``, sorted.

    Raises:
        ReferenceDirError: ``directory`` does not exist or holds no ``*.pt`` file.
    """
    if not directory.is_dir():
        raise ReferenceDirError(f"fixture directory {directory} does not exist or is not a directory")
    paths = sorted(p for p in directory.iterdir() if p.suffix == ".pt" and not p.name.startswith("."))
    if not paths:
        raise ReferenceDirError(f"no fixture files (*.pt) in {directory}")
    return paths


# -- running ------------------------------------------------------------------------------------------------
class Selection:
    """Which checks ``--only`` keeps: a pattern matches a check name (``fnmatch``), a kind or a file name.

    It remembers which patterns selected something, so that a pattern selecting nothing can be reported.

    Args:
        patterns: The ``--only`` values; none keeps everything.
    """

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        self.patterns = tuple(patterns)
        self.used: set[str] = set()

    def keeps(self, name: str, kind: str, file: str) -> bool:
        """Whether the check ``name`` of a ``kind`` fixture read from ``file`` is selected."""
        if not self.patterns:
            return True
        hits = {p for p in self.patterns if p in (kind, file) or fnmatchcase(name, p)}
        self.used |= hits
        return bool(hits)

    def unused(self) -> list[str]:
        """The patterns that selected nothing so far."""
        return [p for p in self.patterns if p not in self.used]


def _run_check(check: ReferenceCheck, ctx: FixtureContext) -> list[CheckRow]:
    """Run one check; an exception becomes a failure row naming it."""
    try:
        with torch.no_grad():
            return check.run(ctx)
    except Exception as err:
        return [ctx.row(check.name, None, "fail", f"{type(err).__name__}: {err}")]


def _ordered_checks(ctx: FixtureContext, checks: list[ReferenceCheck]) -> list[ReferenceCheck | str]:
    """Checks and uncovered output names, in the order of the fixture's ``outputs`` (others at the ends)."""
    order = {name: i for i, name in enumerate(ctx.fixture.outputs)}
    covered = {name for check in checks for name in check.covers}

    def position(check: ReferenceCheck) -> float:
        # Checks covering no output: the load check first, the rest (e.g. conversions) last.
        if not check.covers:
            return -1.0 if check.name == "state_dict" else float(len(order))
        return float(min(order.get(name, len(order)) for name in check.covers))

    items: list[tuple[float, ReferenceCheck | str]] = [(position(c), c) for c in checks]
    items += [(float(i), name) for name, i in order.items() if name not in covered]
    return [item for _, item in sorted(items, key=lambda pair: pair[0])]


def verify_fixture(fixture: ReferenceFixture, selection: Selection | None = None) -> list[CheckRow]:
    """Every selected check of one fixture, plus a skipped row per output that no check covers."""
    selection = selection or Selection()
    ctx = FixtureContext(fixture)
    rows: list[CheckRow] = []
    for item in _ordered_checks(ctx, checks_for(fixture.kind)):
        if isinstance(item, str):
            if selection.keeps(f"{fixture.kind}.{item}", fixture.kind, ctx.file):
                rows.append(ctx.row(item, None, "skipped", NOT_IMPLEMENTED))
        elif selection.keeps(item.full_name, fixture.kind, ctx.file):
            rows += _run_check(item, ctx)
    return rows


def verify_file(path: Path, selection: Selection | None = None) -> list[CheckRow]:
    """Load one fixture file and verify it; an unreadable or unknown file is one failure row."""
    try:
        fixture = load_fixture(path)
    except FixtureError as err:
        return [CheckRow(path.name, "(file)", None, "fail", str(err))]
    return verify_fixture(fixture, selection)


def verify_reference(directory: Path, only: Sequence[str] = (), strict: bool = False) -> list[CheckRow]:
    """Verify every fixture file of ``directory`` against our implementation.

    Args:
        directory: Folder of fixture files (``*.pt``), e.g. ``../shared/reference/official_tiny``.
        only: Keep only the checks these patterns select (see :class:`Selection`).
        strict: Turn every skipped row into a failure.

    Returns:
        The rows, file by file in name order.

    Raises:
        ReferenceDirError: ``directory`` has no fixture file, or a pattern of ``only`` selects nothing.
    """
    paths = fixture_paths(directory)
    load_checks()
    selection = Selection(only)
    rows = [row for path in paths for row in verify_file(path, selection)]
    if selection.unused():
        kinds = sorted({CHECKS.get(name).kind for name in CHECKS.names()})
        raise ReferenceDirError(
            f"--only {' '.join(selection.unused())} selects nothing; use a kind ({', '.join(kinds)}), a file "
            "name, or a check name <kind>.<output> such as pretrain.sim_i2t (fnmatch patterns allowed)"
        )
    return apply_strict(rows) if strict else rows


def apply_strict(rows: Iterable[CheckRow]) -> list[CheckRow]:
    """Rows with every "skipped" turned into a failure that says why (``--strict``)."""
    return [
        dataclasses.replace(row, status="fail", detail=f"skipped under --strict: {row.detail}")
        if row.status == "skipped"
        else row
        for row in rows
    ]


def exit_status(rows: Iterable[CheckRow]) -> int:
    """1 when any row failed, else 0."""
    return int(any(row.status == "fail" for row in rows))
