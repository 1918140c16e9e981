"""Several run reports side by side: one comparison table (Markdown + CSV) next to each run's own render."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from albef.reporting.render import markdown_table, render, safe_name
from albef.reporting.schema import Metric, RunReport

if TYPE_CHECKING:
    import pandas as pd


def comparison_frame(reports: Sequence[RunReport], labels: Sequence[str]) -> pd.DataFrame:
    """One row per run: identity, every headline metric of any run, then ``items/s <stage>`` columns."""
    import pandas as pd

    if len(reports) != len(labels):
        raise ValueError(f"{len(reports)} reports but {len(labels)} labels")
    rows = []
    for report, label in zip(reports, labels, strict=True):
        row: dict[str, Any] = {
            "run": label,
            "task": report.task,
            "dataset": report.dataset,
            "split": report.split,
            "preset": report.model_preset,
            "precision": report.environment.precision,
            "device": report.environment.device_name or report.environment.device,
        }
        row.update({name: m.value for name, m in report.headline_metrics().items()})
        row.update({f"items/s {key}": s.items_per_s for key, s in report.stages.items()})
        rows.append(row)
    metric_cols = list(dict.fromkeys(n for r in reports for n in r.headline_metrics()))
    stage_cols = list(dict.fromkeys(f"items/s {k}" for r in reports for k in r.stages))
    identity = ["run", "task", "dataset", "split", "preset", "precision", "device"]
    return pd.DataFrame(rows, columns=identity + metric_cols + stage_cols)


def comparison_markdown(reports: Sequence[RunReport], labels: Sequence[str]) -> str:
    """Several runs in one Markdown table (see :func:`comparison_frame`); absent values print as ``-``."""
    frame = comparison_frame(reports, labels)
    rows = [[_cell(value) for value in record] for record in frame.itertuples(index=False)]
    return "## Comparison\n\n" + markdown_table(rows, list(frame.columns)) + "\n"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def render_many(reports: Sequence[RunReport], labels: Sequence[str], out_dir: str | Path) -> list[Path]:
    """Render each run into ``out_dir/<label>/`` and write ``comparison.md`` and ``comparison.csv``."""
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {list(labels)}")
    out_dir = Path(out_dir)
    written: list[Path] = []
    for report, label in zip(reports, labels, strict=True):
        written += render(report, out_dir / safe_name(label))
    (out_dir / "comparison.md").write_text(comparison_markdown(reports, labels), encoding="utf-8")
    comparison_frame(reports, labels).to_csv(out_dir / "comparison.csv", index=False)
    return [
        *written,
        out_dir / "comparison.md",
        out_dir / "comparison.csv",
        *write_leaderboard(reports, out_dir),
    ]


def unique_labels(paths: Sequence[str | Path]) -> list[str]:
    """Run labels from file names: the stem, or ``parent_stem`` (then ``stem-2``...) when stems repeat."""
    stems = [Path(p).stem for p in paths]
    labels: list[str] = []
    for path, stem in zip(paths, stems, strict=True):
        base = stem if stems.count(stem) == 1 else f"{Path(path).resolve().parent.name}_{stem}"
        label, n = base, 1
        while label in labels:
            n += 1
            label = f"{base}-{n}"
        labels.append(label)
    return labels


LEADERBOARD_METRICS: dict[str, tuple[str, ...]] = {
    "retrieval": ("r_mean", "txt_r1", "img_r1"),
    "vqa": ("overall",),
    "nlvr": ("accuracy",),
    "ve": ("accuracy",),
    "grounding": ("val_d", "testA_d", "testB_d"),
    "winoground": ("itc/group_score", "itm/group_score", "itm_itc/group_score"),
    "sugarcrepe": ("itc/macro_accuracy", "itm/macro_accuracy", "itm_itc/macro_accuracy"),
    "aro": ("itc/macro_accuracy", "itm/macro_accuracy", "itc/accuracy", "itm/accuracy"),
}
"""The columns a task contributes to the leaderboard (any other task: all its headline metrics)."""


def checkpoint_label(report: RunReport) -> str:
    """A row name for the weights a report evaluated: ``<file name> (<sha256 prefix>)``, or ``random init``."""
    ckpt = report.checkpoint
    if ckpt is None:
        return "random init"
    name = Path(ckpt.path).name if ckpt.path else "checkpoint"
    return f"{name} ({(ckpt.sha256 or '?')[:12]})"


def leaderboard_cells(reports: Sequence[RunReport]) -> tuple[list[str], dict[str, dict[str, Metric]]]:
    """The leaderboard's columns (``<task> <dataset> <split> <metric>``, first-seen order) and each checkpoint's
    metric per column. A later report of the same checkpoint and column replaces an earlier one."""
    cells: dict[str, dict[str, Metric]] = {}
    columns: list[str] = []
    for report in reports:
        row = cells.setdefault(checkpoint_label(report), {})
        for name in LEADERBOARD_METRICS.get(report.task) or tuple(report.headline_metrics()):
            metric = report.metrics.get(name)
            if metric is None or metric.group is not None:
                continue
            column = " ".join(p for p in (report.task, report.dataset, report.split, name) if p)
            if column not in columns:
                columns.append(column)
            row[column] = metric
    return columns, {label: row for label, row in cells.items() if row}


def leaderboard_frame(reports: Sequence[RunReport]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows: checkpoints; columns: ``<task> <dataset> <split> <metric>``; the values, and their intervals
    (``[low, high]`` text, empty without one) as a second frame of the same shape."""
    import pandas as pd

    columns, cells = leaderboard_cells(reports)

    def interval(m: Metric) -> str:
        return "" if m.ci_low is None or m.ci_high is None else f"[{m.ci_low:.2f}, {m.ci_high:.2f}]"

    values = {row: {c: m.value for c, m in metrics.items()} for row, metrics in cells.items()}
    bounds_text = {row: {c: interval(m) for c, m in metrics.items()} for row, metrics in cells.items()}
    frame = pd.DataFrame.from_dict(values, orient="index", columns=columns)
    bounds = pd.DataFrame.from_dict(bounds_text, orient="index", columns=columns).fillna("")
    frame.index.name = bounds.index.name = "checkpoint"
    return frame, bounds


def leaderboard_markdown(reports: Sequence[RunReport]) -> str:
    """The leaderboard as Markdown: ``value ± half-width`` per cell (``-`` where a checkpoint lacks a column)."""
    columns, cells = leaderboard_cells(reports)
    rows = [
        [label, *(metrics[c].formatted(2) if c in metrics else "-" for c in columns)]
        for label, metrics in cells.items()
    ]
    note = "Values with the half-width of their 95 % bootstrap interval; `-`: not evaluated."
    return "## Leaderboard\n\n" + markdown_table(rows, ["checkpoint", *columns]) + f"\n\n{note}\n"


def write_leaderboard(reports: Sequence[RunReport], out_dir: str | Path) -> list[Path]:
    """``leaderboard.md`` and ``leaderboard.csv`` (values, then a ``<column> 95% CI`` column each) in ``out_dir``."""
    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame, bounds = leaderboard_frame(reports)
    table = pd.concat([frame, bounds.add_suffix(" 95% CI")], axis=1)
    ci_columns = bounds.add_suffix(" 95% CI").columns
    table = table[[c for pair in zip(frame.columns, ci_columns, strict=True) for c in pair]]
    (out_dir / "leaderboard.md").write_text(leaderboard_markdown(reports), encoding="utf-8")
    table.to_csv(out_dir / "leaderboard.csv")
    return [out_dir / "leaderboard.md", out_dir / "leaderboard.csv"]
