"""The run reports every workflow writes: their common fields, the training report, writing and rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def checkpoint_info(path: str | Path | None) -> Any:
    """Path and SHA-256 of a checkpoint file (``None`` when there is none)."""
    from albef.reporting.environment import file_sha256
    from albef.reporting.schema import CheckpointInfo

    if path is None or not Path(path).is_file():
        return None
    return CheckpointInfo(str(path), file_sha256(path))


def report_fields(cfg: Any, precision: Any, start: str, wall: float, dataset: str) -> dict[str, Any]:
    """The run-report fields every training and evaluation report shares (task, dataset, preset, environment,
    config)."""
    from albef.config.io import to_dict
    from albef.reporting.environment import collect_environment

    return {
        "task": cfg.task,
        "dataset": dataset,
        "model_preset": cfg.name,
        "environment": collect_environment(precision.device, precision.name, cfg.runtime.seed, start, wall),
        "config": to_dict(cfg),
    }


def write_report(report: Any, out: Path, stem: str) -> Path:
    """``<out>/<stem>.json`` and ``<out>/<stem>.md``, plus the rendered tables and plots (``report.md``,
    ``metrics.csv``, ``stages.csv``, PNGs); returns the JSON path."""
    from albef.fileio import atomic_write_text
    from albef.reporting.render import render, report_markdown

    path: Path = report.save(out / f"{stem}.json")
    atomic_write_text(out / f"{stem}.md", report_markdown(report))
    render(report, out)
    return path


def training_report(
    cfg: Any, result: Any, precision: Any, initial: str | None, start: str, wall: float, dataset: str
) -> Any:
    """A ``kind="training"`` report: losses and batch accuracy (first/last tenth), validation, step time."""
    from albef.engine.metrics_log import read_metrics
    from albef.reporting.measure import stage_stats
    from albef.reporting.schema import RunReport

    records = read_metrics(Path(cfg.runtime.output_dir) / "metrics.jsonl")
    history = [r for r in records if "step_time" in r]  # optimizer steps, not the validation records
    report = RunReport(
        kind="training",
        split="train",
        checkpoint=checkpoint_info(initial),
        **report_fields(cfg, precision, start, wall, dataset),
    )
    tenth = max(1, len(history) // 10)
    for key in [k for k in (history[0] if history else {}) if k.endswith(("_loss", "accuracy"))]:
        percent = 100.0 if key.endswith("accuracy") else 1.0
        for part, rows in (("first", history[:tenth]), ("last", history[-tenth:])):
            value = percent * sum(r[key] for r in rows) / len(rows)
            report.add_metric(
                f"train_{key}_{part}", value, key.endswith("accuracy"), "%" if percent > 1 else ""
            )
    best = _best_validation(result)
    for key, value in best.items():
        if key.startswith("val/"):
            name = key[len("val/") :]
            report.add_metric(f"val_{name}", value, group="class" if name.startswith("accuracy_") else None)
    if history:
        items = [int(cfg.data.batch_size_train * cfg.optim.accum_steps)] * len(history)
        report.stages["train_step"] = stage_stats(
            [r["step_time"] for r in history], items, 0, stage="train_step", item="example"
        )
    step_time = sum(r["step_time"] for r in history)
    report.extra.update(
        steps=int(history[-1]["step"]) if history else 0,
        data_time_share=sum(r.get("data_time", 0.0) for r in history) / step_time if step_time else None,
        validation=result.validation,
        best_epoch=result.state.best_epoch,
        best_checkpoint=str(result.best_checkpoint) if result.best_checkpoint else None,
        final_checkpoint=str(result.checkpoint) if result.checkpoint else None,
        skipped_images=result.skipped_images,
        skipped_files=result.skipped_files,
    )
    return report


def _best_validation(result: Any) -> dict[str, float]:
    """The validation record of the best epoch (the last one when no best was kept)."""
    if not result.validation:
        return {}
    best = result.state.best_epoch
    chosen = [v for v in result.validation if best is not None and int(v["epoch"]) == best]
    return dict(chosen[-1] if chosen else result.validation[-1])
