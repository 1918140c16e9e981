"""The published result tables as data, and the comparison of a run report with them.

The numbers live in ``albef/resources/paper_tables.json``, one *cell* per published number, transcribed only
from the project's research notes (``shared/reference/PAPER-AND-METRICS.md`` sections 1a-1d for retrieval, VQA,
NLVR2 and SNLI-VE; ``shared/reference/ALBEF-SPEC.md`` section 11 for RefCOCO+ grounding); each cell names the
sources the note cites for it, and a cell whose number is not confirmed carries a ``note`` that every
comparison prints. :func:`load_paper_cells` validates the file strictly.

Matching rule (deliberately simple): a paper cell applies to a run when the run's ``task``, ``dataset`` and
``split`` equal the cell's, and the run's *setting* equals the cell's table setting. A run's setting is
``"zero-shot"`` exactly when ``report.extra["zero_shot"] is True`` (e.g. the COCO-fine-tuned model evaluated on
the Flickr30K test split, as in the zero-shot table), and ``"finetuned"`` otherwise. The run's value for a cell
is its *ungrouped* metric of the same name; a cell whose metric the run lacks is listed as not covered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from albef.reporting.schema import Metric, RunReport

PAPER_TABLES_FORMAT = 1
"""The ``format_version`` of ``paper_tables.json`` this module reads."""

SETTINGS = ("finetuned", "zero-shot")
TASK_METRICS: dict[str, frozenset[str]] = {
    "retrieval": frozenset(
        {"txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean"}
    ),
    "vqa": frozenset({"overall"}),
    "nlvr": frozenset({"accuracy", "consistency"}),
    "ve": frozenset({"accuracy"}),
    "grounding": frozenset({"val_d", "testA_d", "testB_d"}),
}
"""The metric names a cell of each task may carry (our official key names)."""

PAPER_HEADERS = (
    "run",
    "table",
    "model",
    "dataset",
    "split",
    "metric",
    "paper",
    "measured",
    "measured 95% CI",
    "paper in CI",
    "delta",
    "source",
)
_CELL_KEYS = ("table", "model", "task", "dataset", "split", "metric", "value", "source")


class PaperTableError(ValueError):
    """The paper table file is malformed (names the file and the offending cell)."""


@dataclass(frozen=True)
class PaperCell:
    """One published number.

    Attributes:
        table: Table id (a key of the file's ``tables``).
        model: ``"ALBEF 4M"``, ``"ALBEF 14M"``, ``"BLIP ViT-B 14M"``.
        task: Report task the number belongs to (``retrieval``, ``vqa``, ``nlvr``, ``ve``, ``grounding``).
        dataset: Report dataset (``coco``, ``flickr30k``, ``vqa_v2``, ``nlvr2``, ``snli_ve``, ``refcoco+``).
        split: Report split (``test``, ``test-dev``, ``test-std``, ``dev``, ``test-P``, ``val``).
        setting: ``"finetuned"`` or ``"zero-shot"`` (from the table).
        metric: Our metric name (``txt_r1`` ... ``img_r10``, ``overall``, ``accuracy``, ``val_d`` ...).
        value: The published value in percent.
        source: The reprints the note cites (``"ViCHA T2, SIMLA T3, ACL23 T1"``).
        note: A caveat about the number, if any.
    """

    table: str
    model: str
    task: str
    dataset: str
    split: str
    setting: str
    metric: str
    value: float
    source: str
    note: str | None = None


@dataclass(frozen=True)
class PaperRow:
    """One measured number next to its published counterpart (``delta = measured - paper``, in points)."""

    run: str
    table: str
    model: str
    dataset: str
    split: str
    metric: str
    paper: float
    measured: float
    delta: float
    source: str
    ci_low: float | None = None
    ci_high: float | None = None
    note: str | None = None

    @property
    def paper_inside(self) -> bool | None:
        """Whether the published value lies inside the measured 95 % interval (``None`` without one)."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_low <= self.paper <= self.ci_high


@dataclass
class PaperComparison:
    """Rows for the cells the runs cover, and the cells (of the selected models) that no run covers."""

    rows: list[PaperRow] = field(default_factory=list)
    uncovered: list[PaperCell] = field(default_factory=list)


def default_tables_path() -> Path:
    """Where the shipped ``paper_tables.json`` is."""
    return Path(str(resources.files("albef").joinpath("resources", "paper_tables.json")))


def load_paper_cells(path: str | Path | None = None) -> list[PaperCell]:
    """Read and validate the paper tables (the shipped file by default).

    Raises:
        PaperTableError: Unreadable file, wrong ``format_version``, or a malformed or duplicated cell.
    """
    path = Path(path) if path is not None else default_tables_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PaperTableError(f"{path}: cannot read paper tables ({err})") from err
    return parse_paper_tables(data, source=str(path))


def parse_paper_tables(data: Any, source: str = "<paper tables>") -> list[PaperCell]:
    """Validate the parsed JSON of the paper tables and return its cells (see :func:`load_paper_cells`)."""
    if not isinstance(data, dict) or data.get("format_version") != PAPER_TABLES_FORMAT:
        raise PaperTableError(f"{source}: expected an object with format_version {PAPER_TABLES_FORMAT}")
    for part in ("tables", "models", "sources", "cells"):
        if not isinstance(data.get(part), dict if part != "cells" else list):
            raise PaperTableError(f"{source}: missing or malformed {part!r}")
    cells = [_parse_cell(raw, data, f"{source}: cells[{i}]") for i, raw in enumerate(data["cells"])]
    seen: set[tuple[str, ...]] = set()
    for cell in cells:
        key = cell_key(cell)
        if key in seen:
            raise PaperTableError(f"{source}: duplicate cell {key}")
        seen.add(key)
    return cells


def _parse_cell(raw: Any, data: dict[str, Any], where: str) -> PaperCell:
    """One validated cell; ``data`` supplies the declared tables, models and sources."""
    if not isinstance(raw, dict):
        raise PaperTableError(f"{where}: expected an object")
    unknown = sorted(set(raw) - {*_CELL_KEYS, "note"})
    missing = [key for key in _CELL_KEYS if key not in raw]
    if unknown or missing:
        raise PaperTableError(f"{where}: unknown keys {unknown} / missing keys {missing}")
    value = raw["value"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 100.0:
        raise PaperTableError(f"{where}: value must be a number in [0, 100], got {value!r}")
    text = {key: raw[key] for key in _CELL_KEYS if key != "value"}
    if any(not isinstance(v, str) or not v.strip() for v in text.values()):
        raise PaperTableError(f"{where}: {', '.join(text)} must be non-empty strings")
    if not isinstance(raw.get("note", ""), str):
        raise PaperTableError(f"{where}: note must be a string")
    table = data["tables"].get(raw["table"])
    if not isinstance(table, dict) or table.get("setting") not in SETTINGS:
        raise PaperTableError(f"{where}: table {raw['table']!r} is not declared with a setting in {SETTINGS}")
    if raw["model"] not in data["models"]:
        raise PaperTableError(f"{where}: model {raw['model']!r} is not declared")
    if raw["metric"] not in TASK_METRICS.get(raw["task"], frozenset()):
        raise PaperTableError(f"{where}: metric {raw['metric']!r} is not a {raw['task']!r} metric")
    keys = [part.split()[0] for part in raw["source"].split(",") if part.strip()]
    if any(key not in data["sources"] for key in keys):
        raise PaperTableError(f"{where}: source {raw['source']!r} names an undeclared source key")
    return PaperCell(setting=table["setting"], value=float(value), note=raw.get("note"), **text)


def cell_key(cell: PaperCell) -> tuple[str, str, str, str, str]:
    """What identifies a cell: table, model, dataset, split, metric."""
    return (cell.table, cell.model, cell.dataset, cell.split, cell.metric)


def paper_models(cells: Sequence[PaperCell]) -> list[str]:
    """The model names of ``cells`` in file order."""
    return list(dict.fromkeys(cell.model for cell in cells))


def run_setting(report: RunReport) -> str:
    """``"zero-shot"`` when ``report.extra["zero_shot"] is True``, else ``"finetuned"``."""
    return "zero-shot" if report.extra.get("zero_shot") is True else "finetuned"


def cell_applies(cell: PaperCell, report: RunReport) -> bool:
    """Whether ``cell`` describes the same task, dataset, split and setting as ``report``."""
    return (cell.task, cell.dataset, cell.split, cell.setting) == (
        report.task,
        report.dataset,
        report.split,
        run_setting(report),
    )


def measured_metric(cell: PaperCell, report: RunReport) -> Metric | None:
    """The run's ungrouped metric for ``cell`` (``None`` when the cell does not apply or the metric is absent)."""
    metric = report.metrics.get(cell.metric)
    if not cell_applies(cell, report) or metric is None or metric.group is not None:
        return None
    return metric


def measured_value(cell: PaperCell, report: RunReport) -> float | None:
    """The value of :func:`measured_metric`."""
    metric = measured_metric(cell, report)
    return None if metric is None else metric.value


def select_cells(cells: Sequence[PaperCell], model: str | None) -> list[PaperCell]:
    """The cells of ``model`` (all when ``None``); an unknown model raises :class:`ValueError` naming the valid ones."""
    if model is None:
        return list(cells)
    models = paper_models(cells)
    if model not in models:
        raise ValueError(f"unknown paper model {model!r}; valid: {', '.join(models)}")
    return [cell for cell in cells if cell.model == model]


def paper_comparison(
    report: RunReport,
    model: str | None = None,
    cells: Sequence[PaperCell] | None = None,
    label: str = "run",
) -> PaperComparison:
    """Compare one run with the paper cells of ``model`` (see the module docstring for the matching rule).

    Args:
        report: The run.
        model: ``"ALBEF 4M"``, ``"ALBEF 14M"``, ... or ``None`` for every model in the tables.
        cells: The paper cells (the shipped tables by default).
        label: The run's name in the rows.

    Returns:
        One row per applicable cell the run measures, and every selected cell it does not.
    """
    return paper_comparison_many([report], [label], model=model, cells=cells)


def paper_comparison_many(
    reports: Sequence[RunReport],
    labels: Sequence[str],
    model: str | None = None,
    cells: Sequence[PaperCell] | None = None,
) -> PaperComparison:
    """Like :func:`paper_comparison` for several runs: rows of every run, cells that none of them covers."""
    if len(reports) != len(labels):
        raise ValueError(f"{len(reports)} reports but {len(labels)} labels")
    selected = select_cells(load_paper_cells() if cells is None else cells, model)
    result = PaperComparison()
    for report, label in zip(reports, labels, strict=True):
        for cell in selected:
            metric = measured_metric(cell, report)
            if metric is not None:
                result.rows.append(_row(label, cell, metric))
    covered = {(row.table, row.model, row.dataset, row.split, row.metric) for row in result.rows}
    result.uncovered = [cell for cell in selected if cell_key(cell) not in covered]
    return result


def _row(label: str, cell: PaperCell, metric: Metric) -> PaperRow:
    measured = metric.value
    return PaperRow(
        run=label,
        table=cell.table,
        model=cell.model,
        dataset=cell.dataset,
        split=cell.split,
        metric=cell.metric,
        paper=cell.value,
        measured=measured,
        delta=measured - cell.value,
        source=cell.source,
        ci_low=metric.ci_low,
        ci_high=metric.ci_high,
        note=cell.note,
    )


def paper_markdown(comparison: PaperComparison) -> str:
    """The comparison as Markdown: the delta table, then the uncovered cells grouped by table and model."""
    from tabulate import tabulate

    lines = ["## Paper comparison", ""]
    if comparison.rows:
        table = [_cells_of(row) for row in comparison.rows]
        lines.append(tabulate(table, headers=PAPER_HEADERS, tablefmt="github", disable_numparse=True))
        lines += _note_lines(comparison.rows)
    else:
        lines.append("No paper cell matches these runs (task, dataset, split and zero-shot setting).")
    lines += ["", "### Paper cells not covered", ""]
    lines += _uncovered_lines(comparison.uncovered) or ["Every selected paper cell is covered."]
    return "\n".join(lines) + "\n"


def _cells_of(row: PaperRow) -> list[str]:
    """The printed cells of one row (values to 2 decimals, the delta signed)."""
    names = [row.run, row.table, row.model, row.dataset, row.split, row.metric]
    ci = "-" if row.ci_low is None or row.ci_high is None else f"[{row.ci_low:.2f}, {row.ci_high:.2f}]"
    inside = {None: "-", True: "yes", False: "no"}[row.paper_inside]
    return [*names, f"{row.paper:.2f}", f"{row.measured:.2f}", ci, inside, _signed(row.delta), row.source]


def _note_lines(rows: Sequence[PaperRow]) -> list[str]:
    """A caveat line per distinct cell note of ``rows`` (e.g. a number not yet confirmed against the paper)."""
    notes: dict[str, list[str]] = {}
    for row in rows:
        if row.note:
            notes.setdefault(row.note, []).append(f"{row.model} {row.split} {row.metric}")
    return (
        ["", *[f"Note ({', '.join(dict.fromkeys(cells))}): {note}" for note, cells in notes.items()]]
        if notes
        else []
    )


def _signed(delta: float) -> str:
    return "nan" if math.isnan(delta) else f"{delta:+.2f}"


def _uncovered_lines(cells: Sequence[PaperCell]) -> list[str]:
    """One bullet per (table, model, dataset, split) with its metrics and values."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    notes: dict[tuple[str, str, str, str], str] = {}
    for cell in cells:
        key = (cell.table, cell.model, cell.dataset, cell.split)
        groups.setdefault(key, []).append(f"{cell.metric} {cell.value:g}")
        if cell.note:
            notes.setdefault(key, cell.note)
    return [
        f"- {t} / {m} / {d} {s}: {', '.join(values)}"
        + (f" ({notes[t, m, d, s]})" if (t, m, d, s) in notes else "")
        for (t, m, d, s), values in groups.items()
    ]
