"""Several run reports side by side: one comparison table (Markdown + CSV) next to each run's own render."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from albef.reporting.render import markdown_table, render, safe_name
from albef.reporting.schema import RunReport

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
    return [*written, out_dir / "comparison.md", out_dir / "comparison.csv"]


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
