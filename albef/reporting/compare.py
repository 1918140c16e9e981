"""The regression gate: compare a current run report with a baseline.

Rules:

- Only reports of the same ``task``, ``dataset`` and ``split`` are compared (:func:`check_comparable`).
- Every metric of the baseline gets a row. Its change is ``current - baseline`` in the metric's own units
  (points for percentages). Against the baseline's ``higher_is_better`` direction, a move beyond the metric's
  tolerance is ``regressed``, a move beyond it the other way ``improved``, anything else ``ok``. A non-finite
  current value where the baseline is finite is ``regressed``.
- The tolerance of a metric that carries a bootstrap interval in **both** reports is the **combined
  interval**, ``sqrt(h_baseline**2 + h_current**2)`` for half-widths ``h`` (the half-width of the 95 %
  interval of a difference of two independent estimates): a change inside it is what resampling the test
  set alone would give. A per-metric tolerance (``metric_tols``) overrides it; metrics without intervals
  on both sides (and every metric with ``use_intervals=False``) use the absolute ``metric_tol``. Each row
  records which ``basis`` it used.
- A metric of the baseline that the current run lacks is ``missing`` and **counts as a failure**: a gate that
  silently passes when an evaluation stops producing a number would hide exactly the regressions it guards.
  Metrics only the current run has are ``new`` and informational.
- Every stage of the baseline gets a row comparing ``items_per_s``: the change is relative
  (``current / baseline - 1``); a drop by more than ``speed_tol`` is ``regressed``, a rise by more than it
  ``improved``. A stage missing from the current run is ``missing`` but **not** a failure (evaluations skip
  stages legitimately, e.g. image encoding on a feature-cache hit); ``speed_tol=None`` skips stages entirely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from albef.reporting.schema import Metric, ReportError, RunReport

DEFAULT_METRIC_TOL = 1.0
"""Points (metric units) a metric may move against its direction before it counts as a regression."""

DEFAULT_SPEED_TOL = 0.10
"""Fraction of items/s a stage may lose before it counts as a regression."""

FAILING = ("regressed", "missing")


@dataclass(frozen=True)
class MetricDelta:
    """One metric of the baseline compared with the current run (``current``/``change`` ``None`` if missing)."""

    name: str
    baseline: float | None
    current: float | None
    change: float | None
    tolerance: float
    status: str
    higher_is_better: bool = True
    unit: str = "%"
    basis: str = "absolute"
    """``interval`` (the combined bootstrap interval) or ``absolute`` (a configured tolerance)."""


@dataclass(frozen=True)
class StageDelta:
    """One stage's items/s compared; ``change`` is relative (``0.05`` = 5 % faster)."""

    stage: str
    baseline: float | None
    current: float | None
    change: float | None
    tolerance: float
    status: str


@dataclass
class ComparisonResult:
    """The rows of a comparison; :attr:`failed` is what the CLI turns into exit status 1."""

    metrics: list[MetricDelta] = field(default_factory=list)
    stages: list[StageDelta] = field(default_factory=list)

    @property
    def failures(self) -> list[MetricDelta | StageDelta]:
        """Regressed metrics and stages, and metrics missing from the current run."""
        bad: list[MetricDelta | StageDelta] = [m for m in self.metrics if m.status in FAILING]
        return bad + [s for s in self.stages if s.status == "regressed"]

    @property
    def failed(self) -> bool:
        """Whether anything regressed or a baseline metric is missing."""
        return bool(self.failures)


def check_comparable(baseline: RunReport, current: RunReport) -> None:
    """Raise :class:`ReportError` unless both reports have the same task, dataset and split."""
    for name in ("task", "dataset", "split"):
        ours, theirs = getattr(baseline, name), getattr(current, name)
        if ours != theirs:
            raise ReportError(
                f"cannot compare reports of different {name}: baseline {ours!r}, current {theirs!r}"
            )


def metric_tolerance(
    name: str, metric_tol: float | Mapping[str, float], metric_tols: Mapping[str, float] | None
) -> float:
    """The tolerance of metric ``name``: ``metric_tols[name]``, else ``metric_tol`` (a default or a mapping)."""
    if metric_tols and name in metric_tols:
        return float(metric_tols[name])
    if isinstance(metric_tol, Mapping):
        return float(metric_tol.get(name, DEFAULT_METRIC_TOL))
    return float(metric_tol)


def classify(gain: float, tolerance: float) -> str:
    """``regressed`` / ``improved`` / ``ok`` for a signed ``gain`` (positive is better)."""
    if gain < -tolerance:
        return "regressed"
    return "improved" if gain > tolerance else "ok"


def combined_half_width(baseline: Metric, current: Metric) -> float | None:
    """``sqrt(h_b**2 + h_c**2)`` of the two metrics' interval half-widths, or ``None`` if either lacks one."""
    hb, hc = baseline.half_width, current.half_width
    if hb is None or hc is None:
        return None
    return math.hypot(hb, hc)


def compare_metrics(
    baseline: RunReport,
    current: RunReport,
    metric_tol: float | Mapping[str, float] = DEFAULT_METRIC_TOL,
    metric_tols: Mapping[str, float] | None = None,
    use_intervals: bool = True,
) -> list[MetricDelta]:
    """Baseline metrics first (compared or ``missing``), then metrics only the current run has (``new``)."""
    rows = []
    for name, base in baseline.metrics.items():
        tol = metric_tolerance(name, metric_tol, metric_tols)
        cur = current.metrics.get(name)
        combined = None if cur is None or not use_intervals else combined_half_width(base, cur)
        basis = "absolute"
        if combined is not None and not (metric_tols and name in metric_tols):
            tol, basis = combined, "interval"
        if cur is None:
            rows.append(
                MetricDelta(name, base.value, None, None, tol, "missing", base.higher_is_better, base.unit)
            )
            continue
        status = metric_status(base.value, cur.value, base.higher_is_better, tol)
        change = cur.value - base.value
        rows.append(
            MetricDelta(
                name, base.value, cur.value, change, tol, status, base.higher_is_better, base.unit, basis
            )
        )
    for name, cur in current.metrics.items():
        if name not in baseline.metrics:
            tol = metric_tolerance(name, metric_tol, metric_tols)
            rows.append(MetricDelta(name, None, cur.value, None, tol, "new", cur.higher_is_better, cur.unit))
    return rows


def metric_status(baseline: float, current: float, higher_is_better: bool, tolerance: float) -> str:
    """The status of one metric; a value turning non-finite regresses, one turning finite improves."""
    if not math.isfinite(baseline) or not math.isfinite(current):
        if math.isfinite(baseline) == math.isfinite(current):
            return "ok"
        return "improved" if math.isfinite(current) else "regressed"
    change = current - baseline
    return classify(change if higher_is_better else -change, tolerance)


def compare_stages(
    baseline: RunReport, current: RunReport, speed_tol: float = DEFAULT_SPEED_TOL
) -> list[StageDelta]:
    """Items/s of every baseline stage (compared or ``missing``), then stages only the current run has (``new``)."""
    rows = []
    for key, base in baseline.stages.items():
        cur = current.stages.get(key)
        if cur is None:
            rows.append(StageDelta(key, base.items_per_s, None, None, speed_tol, "missing"))
            continue
        change = relative_change(base.items_per_s, cur.items_per_s)
        rows.append(
            StageDelta(key, base.items_per_s, cur.items_per_s, change, speed_tol, classify(change, speed_tol))
        )
    for key, cur in current.stages.items():
        if key not in baseline.stages:
            rows.append(StageDelta(key, None, cur.items_per_s, None, speed_tol, "new"))
    return rows


def relative_change(baseline: float, current: float) -> float:
    """``current / baseline - 1``; a zero baseline gives ``0`` (both zero) or ``inf`` (any speed is better)."""
    if baseline <= 0:
        return 0.0 if current <= 0 else math.inf
    return current / baseline - 1.0


def compare_reports(
    baseline: RunReport,
    current: RunReport,
    metric_tol: float | Mapping[str, float] = DEFAULT_METRIC_TOL,
    speed_tol: float | None = DEFAULT_SPEED_TOL,
    metric_tols: Mapping[str, float] | None = None,
    use_intervals: bool = True,
) -> ComparisonResult:
    """Compare ``current`` with ``baseline`` (the rules are in the module docstring).

    Args:
        baseline: The reference run.
        current: The run under test.
        metric_tol: Tolerance in metric units for every metric, or a mapping name -> tolerance whose absent
            names get :data:`DEFAULT_METRIC_TOL`.
        speed_tol: Fraction of items/s a stage may lose; ``None`` compares no stage.
        metric_tols: Per-metric overrides applied on top of ``metric_tol`` (``--tol NAME=POINTS``); they also
            override the combined interval.
        use_intervals: Use the combined bootstrap interval as the tolerance where both reports carry one.

    Returns:
        The metric rows and the stage rows.

    Raises:
        ReportError: The reports differ in task, dataset or split.
        ValueError: A negative tolerance.
    """
    check_comparable(baseline, current)
    tolerances = [metric_tol] if not isinstance(metric_tol, Mapping) else list(metric_tol.values())
    tolerances += list((metric_tols or {}).values()) + ([speed_tol] if speed_tol is not None else [])
    if any(not tol >= 0 for tol in tolerances):
        raise ValueError(f"tolerances must be non-negative, got {tolerances}")
    stages = [] if speed_tol is None else compare_stages(baseline, current, speed_tol)
    metrics = compare_metrics(baseline, current, metric_tol, metric_tols, use_intervals)
    return ComparisonResult(metrics, stages)


def comparison_text(result: ComparisonResult) -> str:
    """The comparison as two Markdown tables and a one-line verdict."""
    from tabulate import tabulate

    metric_rows = [
        (
            m.name,
            _num(m.baseline),
            _num(m.current),
            _num(m.change, signed=True),
            f"±{m.tolerance:.2f}" + (" (CI)" if m.basis == "interval" else ""),
            m.status,
        )
        for m in result.metrics
    ]
    parts = [
        tabulate(
            metric_rows,
            headers=("metric", "baseline", "current", "change", "tolerance", "status"),
            tablefmt="github",
            disable_numparse=True,
        )
    ]
    if result.stages:
        stage_rows = [
            (
                s.stage,
                _num(s.baseline, 1),
                _num(s.current, 1),
                _pct(s.change),
                f"-{s.tolerance:.0%}",
                s.status,
            )
            for s in result.stages
        ]
        headers = ("stage", "baseline items/s", "current items/s", "change", "tolerance", "status")
        parts.append(tabulate(stage_rows, headers=headers, tablefmt="github", disable_numparse=True))
    parts.append(verdict(result))
    return "\n\n".join(parts) + "\n"


def verdict(result: ComparisonResult) -> str:
    """``PASS`` or ``FAIL: n regressed (names)``."""
    failures = result.failures
    if not failures:
        return "PASS: no regression"
    names = ", ".join(f.name if isinstance(f, MetricDelta) else f.stage for f in failures)
    return f"FAIL: {len(failures)} regression(s) or missing metric(s): {names}"


def _num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _pct(change: float | None) -> str:
    return "-" if change is None else f"{change:+.1%}"
