"""Render run reports: Markdown, CSV (through pandas) and PNG plots (several side by side: :mod:`.side_by_side`).

Every function here reads a :class:`~albef.reporting.RunReport` and writes nothing but what it is asked to.
Plots draw on a :class:`matplotlib.figure.Figure` bound to an Agg canvas, so no pyplot state or global backend
is touched, and pandas/matplotlib/tabulate are imported inside the functions (importing this module is cheap).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from albef.reporting.schema import Metric, RunReport, StageStats

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

RECALL_SERIES = (("txt", "TR (image->text)"), ("img", "IR (text->image)"))
"""Metric prefix and plot label of the two retrieval directions (``txt_r1`` is text retrieval)."""

METRIC_HEADERS = ("metric", "value", "95% CI", "n", "unit", "better")
STAGE_HEADERS = (
    "stage",
    "item",
    "precision",
    "batch",
    "items/s",
    "p50 ms/batch",
    "p95 ms/batch",
    "p99 ms/batch",
    "mean ms/item",
    "TFLOP/s",
    "MFU",
)
LATENCY_FIELDS = ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "min_ms", "max_ms")
STAGE_COLUMNS = [
    "key",
    "stage",
    "item",
    "precision",
    "batch_size",
    "num_batches",
    "items",
    "warmup_batches",
    "items_per_s",
    *(f"batch_{name}" for name in LATENCY_FIELDS),
    *(f"item_{name}" for name in LATENCY_FIELDS),
    "flops_per_item",
    "achieved_tflops",
    "mfu",
    "peak_memory_mib",
]
"""Columns of ``stages.csv`` (:func:`stage_record`)."""
LOG_SCALE_RATIO = 100.0
"""Plots switch to a log axis when the largest value exceeds the smallest by this factor."""


def _fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table cell (``-`` for ``None``)."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def metric_groups(report: RunReport) -> list[str]:
    """The metric groups of ``report`` in first-seen order (``answer_type``, ``class``, ...)."""
    return list(dict.fromkeys(m.group for m in report.metrics.values() if m.group is not None))


def reference_levels(report: RunReport) -> dict[str, float]:
    """Chance level (retrieval) or majority-answer baseline (VQA) per metric, where the report carries one."""
    reference = report.extra.get("chance") or report.extra.get("majority_baseline") or {}
    return {str(k): float(v) for k, v in reference.items() if isinstance(v, (int, float))}


def metrics_table(report: RunReport, group: str | None = None) -> str:
    """The metrics of ``group`` (the headline ones for ``None``) as a Markdown table, with a ``chance``
    column when the report has chance levels or a baseline."""
    reference = reference_levels(report)
    rows = [
        [name, m.formatted(2), _interval(m), "-" if m.n is None else str(m.n), m.unit,
         "higher" if m.higher_is_better else "lower"]
        + ([_fmt(reference.get(name))] if reference else [])
        for name, m in report.metrics.items()
        if m.group == group
    ]  # fmt: skip
    return markdown_table(rows, METRIC_HEADERS + (("chance",) if reference else ()))


def _interval(metric: Metric) -> str:
    """``[56.1, 61.5]`` (the bootstrap interval's bounds), ``-`` without one."""
    if metric.ci_low is None or metric.ci_high is None:
        return "-"
    return f"[{metric.ci_low:.2f}, {metric.ci_high:.2f}]"


def stage_precision(report: RunReport, stage: StageStats) -> str:
    """The stage's own precision, else the run's."""
    return stage.precision or report.environment.precision


def stages_table(report: RunReport) -> str:
    """One Markdown row per stage: throughput, per-batch percentiles, per-item latency, FLOP/s and MFU."""
    rows = [
        (
            key,
            s.item,
            stage_precision(report, s),
            str(s.batch_size),
            _fmt(s.items_per_s, 1),
            _fmt(s.latency_batch.p50_ms, 3),
            _fmt(s.latency_batch.p95_ms, 3),
            _fmt(s.latency_batch.p99_ms, 3),
            _fmt(s.latency_item.mean_ms, 4),
            _fmt(s.achieved_tflops, 2),
            "-" if s.mfu is None else f"{s.mfu:.1%}",
        )
        for key, s in report.stages.items()
    ]
    return markdown_table(rows, STAGE_HEADERS)


def header_rows(report: RunReport) -> list[tuple[str, str]]:
    """The run's identity as (field, value) pairs: task, data, weights, device, versions, git, times."""
    env, ckpt = report.environment, report.checkpoint
    weights = "random init" if ckpt is None else f"{(ckpt.sha256 or '?')[:12]} ({ckpt.path or 'no path'})"
    named = [
        ("torch", env.torch),
        ("timm", env.timm),
        ("transformers", env.transformers),
        ("python", env.python),
    ]
    named += [("cuda", env.cuda or ""), ("cudnn", env.cudnn or "")]
    versions = ", ".join(f"{name} {version}" for name, version in named if version) or "-"
    return [
        ("kind", report.kind),
        ("task", report.task),
        ("dataset", report.dataset),
        ("split", report.split or "-"),
        ("model preset", report.model_preset or "-"),
        ("checkpoint sha256", weights),
        ("device", f"{env.device} {env.device_name}".strip()),
        ("precision", env.precision),
        ("versions", versions),
        ("git", env.git or "-"),
        ("seed", "-" if env.seed is None else str(env.seed)),
        ("start time", env.start_time or "-"),
        ("wall time", "-" if env.wall_time_s is None else f"{env.wall_time_s:.1f} s"),
    ]


def memory_lines(report: RunReport) -> list[str]:
    """The run's peak memory and every stage's own peak, as Markdown bullets."""
    lines = (
        [] if report.memory is None else [f"- run peak ({report.memory.kind}): {report.memory.mib:.1f} MiB"]
    )
    lines += [
        f"- {key}: {s.peak_memory_mib:.1f} MiB"
        for key, s in report.stages.items()
        if s.peak_memory_mib is not None
    ]
    return lines or ["- not measured"]


def extra_tables(report: RunReport) -> list[tuple[str, dict[str, Any]]]:
    """The report's own tables (``extra["tables"]``: title -> ``{"headers": [...], "rows": [[...], ...]}``),
    e.g. a benchmark's scorers side by side; malformed entries are left out."""
    tables = report.extra.get("tables")
    if not isinstance(tables, dict):
        return []
    return [
        (str(title), table)
        for title, table in tables.items()
        if isinstance(table, dict)
        and isinstance(table.get("headers"), list)
        and isinstance(table.get("rows"), list)
    ]


def report_markdown(report: RunReport) -> str:
    """The whole report as Markdown: header, headline metrics, grouped metrics, stages, memory."""
    title = f"# {report.task} / {report.dataset}" + (f" / {report.split}" if report.split else "")
    parts = [title, markdown_table(header_rows(report), ("field", "value")), "## Metrics"]
    parts.append(metrics_table(report) if report.headline_metrics() else "No headline metric.")
    parts += [f"### Metrics by {group}\n\n{metrics_table(report, group)}" for group in metric_groups(report)]
    parts += [f"## {title}\n\n{markdown_table(t['rows'], t['headers'])}" for title, t in extra_tables(report)]
    parts.append("## Stages")
    parts.append(stages_table(report) if report.stages else "No timed stage.")
    parts += ["## Memory", "\n".join(memory_lines(report))]
    return "\n\n".join(parts) + "\n"


def metrics_frame(report: RunReport) -> pd.DataFrame:
    """One row per metric: ``metric, value, unit, higher_is_better, group``."""
    import pandas as pd

    rows = [
        (name, m.value, m.ci_low, m.ci_high, m.n, m.unit, m.higher_is_better, m.group)
        for name, m in report.metrics.items()
    ]
    columns = ["metric", "value", "ci_low", "ci_high", "n", "unit", "higher_is_better", "group"]
    return pd.DataFrame(rows, columns=columns)


def stage_record(key: str, stage: StageStats, precision: str) -> dict[str, Any]:
    """One stage as a flat record (latencies as ``batch_p50_ms``, ``item_mean_ms``, ...)."""
    record: dict[str, Any] = {"key": key, "stage": stage.stage, "item": stage.item, "precision": precision}
    for name in ("batch_size", "num_batches", "items", "warmup_batches", "items_per_s"):
        record[name] = getattr(stage, name)
    for prefix, stats in (("batch", stage.latency_batch), ("item", stage.latency_item)):
        record.update({f"{prefix}_{name}": getattr(stats, name) for name in LATENCY_FIELDS})
    for name in ("flops_per_item", "achieved_tflops", "mfu", "peak_memory_mib"):
        record[name] = getattr(stage, name)
    return record


def stages_frame(report: RunReport) -> pd.DataFrame:
    """One row per stage (:func:`stage_record`; ``precision`` is the stage's, else the run's)."""
    import pandas as pd

    records = [stage_record(k, s, stage_precision(report, s)) for k, s in report.stages.items()]
    return pd.DataFrame(records, columns=STAGE_COLUMNS)


def to_frames(report: RunReport) -> dict[str, pd.DataFrame]:
    """``{"metrics": ..., "stages": ...}``: the frames written as ``metrics.csv`` and ``stages.csv``."""
    return {"metrics": metrics_frame(report), "stages": stages_frame(report)}


def _figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _wide_range(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and max(positive) > LOG_SCALE_RATIO * min(positive)


def plot_throughput(report: RunReport, path: Path) -> Path | None:
    """Bar chart of items/s per stage (``None`` when the report has no stage)."""
    if not report.stages:
        return None
    labels = [f"{key} ({s.item}s/s)" for key, s in report.stages.items()]
    values = [s.items_per_s for s in report.stages.values()]
    figure = _figure(8, 1.0 + 0.45 * len(values))
    ax = figure.add_subplot()
    ax.barh(labels, values, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("items / s")
    ax.set_title(f"Throughput: {report.task} / {report.dataset}")
    if _wide_range(values):
        ax.set_xscale("log")
    figure.savefig(path, dpi=100)
    return path


def plot_latency(report: RunReport, path: Path) -> Path | None:
    """Box plot of the per-batch latency samples of each stage (``None`` when no stage has samples)."""
    sampled = {key: s.samples_ms for key, s in report.stages.items() if s.samples_ms}
    if not sampled:
        return None
    figure = _figure(max(6.0, 1.2 * len(sampled)), 4.5)
    ax = figure.add_subplot()
    ax.boxplot(list(sampled.values()))
    ax.set_xticks(range(1, len(sampled) + 1))
    ax.set_xticklabels(list(sampled), rotation=30, ha="right")
    ax.set_ylabel("ms per batch")
    ax.set_title("Latency per batch")
    if _wide_range([min(v) for v in sampled.values()] + [max(v) for v in sampled.values()]):
        ax.set_yscale("log")
    figure.savefig(path, dpi=100)
    return path


def recall_curves(report: RunReport) -> dict[str, dict[int, float]]:
    """Recall@K series to plot: label -> {K: percent}.

    From the ungrouped ``txt_r{K}`` / ``img_r{K}`` metrics when present; otherwise from
    ``extra["recall_at_k"]``, either ``{K: value}`` (one series) or ``{name: {K: value}}``. Keys that are not
    integers and values that are not numbers are skipped.
    """
    curves: dict[str, dict[int, float]] = {}
    pattern = re.compile(r"(txt|img)_r(\d+)$")
    for name, metric in report.metrics.items():
        match = pattern.match(name)
        if match and metric.group is None:
            label = dict(RECALL_SERIES)[match.group(1)]
            curves.setdefault(label, {})[int(match.group(2))] = metric.value
    if curves:
        return curves
    raw = report.extra.get("recall_at_k")
    if not isinstance(raw, dict):
        return {}
    nested = raw and all(isinstance(v, dict) for v in raw.values())
    series = raw if nested else {"recall@K": raw}
    parsed = {str(label): _k_values(values) for label, values in series.items()}
    return {label: values for label, values in parsed.items() if values}


def _k_values(raw: dict[Any, Any]) -> dict[int, float]:
    out = {}
    for key, value in raw.items():
        if str(key).isdigit() and isinstance(value, int | float) and not isinstance(value, bool):
            out[int(key)] = float(value)
    return dict(sorted(out.items()))


def plot_recall_at_k(report: RunReport, path: Path) -> Path | None:
    """Recall@K curves (see :func:`recall_curves`); ``None`` when there are none."""
    curves = recall_curves(report)
    if not curves:
        return None
    figure = _figure(6, 4)
    ax = figure.add_subplot()
    for label, values in curves.items():
        ax.plot(list(values), list(values.values()), marker="o", label=label)
    ks = sorted({k for values in curves.values() for k in values})
    ax.set_xticks(ks)
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K (%)")
    ax.set_title(f"Recall@K: {report.dataset} {report.split or ''}".strip())
    ax.legend()
    figure.savefig(path, dpi=100)
    return path


def plot_group(report: RunReport, group: str, path: Path) -> Path | None:
    """Horizontal bars of the metrics of ``group`` (accuracy per answer type, class, ...), one readable label
    a row (the group's name prefix dropped) with its value and interval; ``None`` if the group is empty."""
    metrics = {name: m for name, m in report.metrics.items() if m.group == group}
    if not metrics:
        return None
    labels = [name.split("/", 1)[1] if name.startswith(f"{group}/") else name for name in metrics]
    values = [m.value for m in metrics.values()]
    errors = [
        [m.value - m.ci_low if m.ci_low is not None else 0.0 for m in metrics.values()],
        [m.ci_high - m.value if m.ci_high is not None else 0.0 for m in metrics.values()],
    ]
    figure = _figure(7.5, 0.4 * len(metrics) + 1.4)
    ax = figure.add_subplot()
    rows = range(len(metrics))
    ax.barh(list(rows), values, xerr=errors, color="tab:green", capsize=2)
    ax.set_yticks(list(rows), labels)
    ax.invert_yaxis()
    top = max([*values, *(m.ci_high or 0.0 for m in metrics.values())])
    if min(values) >= 0 and top > 0:
        ax.set_xlim(0, top * 1.12)  # room for the value labels
    for row, (value, metric) in enumerate(zip(values, metrics.values(), strict=True)):
        right = value if metric.ci_high is None else max(value, metric.ci_high)  # past the error bar
        ax.annotate(
            f"{value:.1f}", (right, row), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8
        )
    ax.set_xlabel("value (bars: 95 % interval)" if any(any(e) for e in errors) else "value")
    ax.set_title(f"{report.task} metrics by {group}")
    figure.savefig(path, dpi=100)
    return path


def safe_name(text: str) -> str:
    """``text`` usable as a file or folder name (anything but letters, digits, ``.-_`` becomes ``_``)."""
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "run"


def plot_report(report: RunReport, out_dir: Path) -> list[Path]:
    """Every applicable plot as PNG in ``out_dir``: throughput, latency, recall@K, one per metric group."""
    out_dir = Path(out_dir)
    written = [
        plot_throughput(report, out_dir / "throughput.png"),
        plot_latency(report, out_dir / "latency.png"),
        plot_recall_at_k(report, out_dir / "recall_at_k.png"),
    ]
    written += [plot_group(report, g, out_dir / f"group_{safe_name(g)}.png") for g in metric_groups(report)]
    return [path for path in written if path is not None]


def render(report: RunReport, out_dir: str | Path) -> list[Path]:
    """Write ``report.md``, ``metrics.csv``, ``stages.csv`` and the plots into ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / "report.md"
    markdown.write_text(report_markdown(report), encoding="utf-8")
    written = [markdown]
    for name, frame in to_frames(report).items():
        frame.to_csv(out_dir / f"{name}.csv", index=False)
        written.append(out_dir / f"{name}.csv")
    return written + plot_report(report, out_dir)
