"""What the commands print after a run: a report's metrics, stages and files, as plain text lines.

The JSON and Markdown reports are the record; these lines are the glance at the end of a command. Every
task's evaluation is printed the same way (:func:`evaluation_lines`), every training run too
(:func:`training_lines`).
"""

from __future__ import annotations

from tabulate import tabulate

from albef.reporting.render import reference_levels
from albef.reporting.schema import RunReport

FILE_KEYS = ("result_file", "predictions_file", "scores_file")
"""``extra`` entries that name a file an evaluation wrote besides its report."""


def evaluation_lines(report: RunReport) -> list[str]:
    """The metrics (value ± 95% interval half-width, n, chance or baseline), one line per timed stage, the
    end-to-end rate and the files written."""
    reference = reference_levels(report)
    rows = [
        (
            name,
            m.group or "",
            m.formatted(2),
            m.n or "",
            f"{reference[name]:.2f}" if name in reference else "",
        )
        for name, m in report.metrics.items()
    ]
    headers = [
        f"{report.task} {report.split}",
        "group",
        "value (± 95% CI)",
        "n",
        "chance" if reference else "",
    ]
    lines = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True).splitlines()
    for name, stage in report.stages.items():
        lat = stage.latency_batch
        lines.append(
            f"{name}: {stage.items_per_s:.1f} {stage.item}s/s, batch p50 {lat.p50_ms:.1f} ms, "
            f"p95 {lat.p95_ms:.1f} ms ({stage.num_batches} batches)"
        )
    if "examples_per_s" in report.extra:
        lines.append(f"end to end: {report.extra['examples_per_s']:.1f} examples/s")
    lines += [f"{key.replace('_', ' ')}: {report.extra[key]}" for key in FILE_KEYS if key in report.extra]
    return lines


def training_lines(report: RunReport) -> list[str]:
    """First -> last value of each logged loss/accuracy, the validation figures, the number of steps."""
    names = sorted({n[: -len("_first")] for n in report.metrics if n.endswith("_first")})
    lines = []
    for name in names:
        first, last = report.metrics[f"{name}_first"].value, report.metrics[f"{name}_last"].value
        lines.append(f"{name[len('train_') :]}: {first:.4f} -> {last:.4f}")
    lines += [f"{name}: {m.value:.2f}" for name, m in report.metrics.items() if name.startswith("val_")]
    lines.append(f"steps: {report.extra['steps']}")
    return lines
