"""Console output shared by the classification commands: NLVR², SNLI-VE, text assignment (their run reports are
built by ``albef.workflows.finetune``)."""

from __future__ import annotations

from typing import Any


# -- printing -----------------------------------------------------------------------------------------------
def print_evaluation(report: Any) -> None:
    """The metrics (percent) and the classification throughput."""
    from tabulate import tabulate

    rows = [(name, m.group or "", m.formatted(2), m.n or "") for name, m in report.metrics.items()]
    headers = [f"{report.task} {report.split}", "group", "% (± 95% CI)", "n"]
    print(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    for name, stage in report.stages.items():
        lat = stage.latency_batch
        print(
            f"{name}: {stage.items_per_s:.1f} {stage.item}s/s, batch p50 {lat.p50_ms:.1f} ms, "
            f"p95 {lat.p95_ms:.1f} ms ({stage.num_batches} batches)"
        )


def print_training(report: Any) -> None:
    """First -> last value of each logged loss/accuracy, and the validation figures."""
    names = sorted({n[: -len("_first")] for n in report.metrics if n.endswith("_first")})
    for name in names:
        first, last = report.metrics[f"{name}_first"].value, report.metrics[f"{name}_last"].value
        print(f"{name[len('train_') :]}: {first:.4f} -> {last:.4f}")
    for name, metric in report.metrics.items():
        if name.startswith("val_"):
            print(f"{name}: {metric.value:.2f}")
    print(f"steps: {report.extra['steps']}")
