"""The quickstart summary: one run report over the whole pipeline (pretrain -> retrieval, VQA, NLVR², SNLI-VE,
grounding; pretrain -> its ITM-only second stage -> the compositional probes).

Each stage of ``albef quickstart`` writes its own run report; :func:`pipeline_report` gathers their headline
metrics (prefixed with the stage, e.g. ``vqa.overall``), their timed stages and the chance level of every
metric (from the synthetic world's ``manifest.json``, else from the stage report's own ``extra["chance"]``, as
grounding computes it from the proposals) into one :class:`~albef.reporting.RunReport`.
:func:`summary_markdown` and :func:`plot_pipeline` render it. Pure functions over files and records; the
orchestration lives in :mod:`albef.workflows.quickstart`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from albef.reporting.schema import Metric, RunReport

HEADLINES: dict[str, tuple[str, ...]] = {
    "pretrain": ("zero_shot_r_mean", "zero_shot_txt_r1", "zero_shot_img_r1"),
    "retrieval": ("r_mean", "txt_r1", "img_r1"),
    "vqa": ("overall",),
    "nlvr": ("accuracy", "consistency"),
    "ve": ("accuracy",),
    "grounding": ("testA_d", "testB_d"),
    "winoground": ("itm/group_score", "itc/group_score"),
    "sugarcrepe": ("itm/swap_att", "itm/swap_obj", "itm/replace_rel", "itc/swap_att", "itm/macro_accuracy"),
}
"""The metrics of each stage that the summary table shows (all metrics are kept in the JSON)."""
SECONDARY: frozenset[str] = frozenset(
    {
        "nlvr.consistency",
        "winoground.itc/group_score",
        "sugarcrepe.itc/swap_att",
        "sugarcrepe.itm/macro_accuracy",
    }
)
"""Headline metrics shown against chance but not required to clear it. NLVR² consistency counts whole sentence
groups, of which the synthetic test split has 100, so its noise (about 4 points) is as large as the margin;
the task's own measure, accuracy, is judged. Of the compositional probes, ITM's swaps and Winoground-style group
score are judged (the two-stage pretrained model binds and orders with ITM); ITC's are shown beside them for the
contrast, at chance (one vector per image and per caption cannot say which colour stands where), and the
SugarCrepe macro accuracy for reference."""


@dataclass(frozen=True)
class ChanceLevels:
    """Chance level of each summary metric (percent), from the world's manifest."""

    values: dict[str, float]

    def get(self, name: str) -> float | None:
        """Chance of ``stage.metric`` or ``None`` when the manifest does not define one."""
        return self.values.get(name)


def chance_levels(manifest: Mapping[str, Any]) -> ChanceLevels:
    """Chance level (percent) of each summary metric from a synthetic world's ``manifest.json``.

    Retrieval: the recall of a random ranking (``i2t_rK`` -> ``txt_rK``, ``t2i_rK`` -> ``img_rK``, and their
    mean as ``r_mean``); VQA: the majority answer per answer type; NLVR²: the majority label and the
    consistency of random guesses; SNLI-VE: the majority label.
    """
    values: dict[str, float] = {}
    chance = manifest.get("chance", {})
    ranking = chance.get("retrieval_test", {})
    if ranking:
        recall = {}
        for k in (1, 5, 10):
            recall[f"txt_r{k}"] = 100.0 * ranking[f"i2t_r{k}"]
            recall[f"img_r{k}"] = 100.0 * ranking[f"t2i_r{k}"]
        recall["r_mean"] = sum(recall.values()) / len(recall)
        for name, value in recall.items():
            values[f"retrieval.{name}"] = value
            values[f"pretrain.zero_shot_{name}"] = value
    vqa = chance.get("vqa_test", {})
    if "overall" in vqa:
        values["vqa.overall"] = 100.0 * vqa["overall"]
    nlvr = chance.get("nlvr_test", {})
    if "rate" in nlvr:
        values["nlvr.accuracy"] = 100.0 * nlvr["rate"]
    if "random_consistency" in nlvr:
        values["nlvr.consistency"] = 100.0 * nlvr["random_consistency"]
    ve = chance.get("ve_test", {})
    if "rate" in ve:
        values["ve.accuracy"] = 100.0 * ve["rate"]
    return ChanceLevels(values)


def pretrain_metrics(summary: Mapping[str, Any]) -> dict[str, Metric]:
    """Metrics of a pretraining ``summary.json``: zero-shot ITC recall and the loss of each part."""
    out: dict[str, Metric] = {}
    intervals = summary.get("zero_shot_itc_intervals", {})
    for name, value in summary.get("zero_shot_itc", {}).items():
        higher = not name.endswith("_rank")
        low, high, n = intervals.get(name, (None, None, None))
        out[f"zero_shot_{name}"] = Metric(float(value), higher, "%" if higher else "", None, n, low, high)
    for when in ("first", "last"):
        for name, value in summary.get(f"loss_{when}", {}).items():
            out[f"{name}_{when}"] = Metric(float(value), False, "", group="loss")
    return out


def pipeline_report(
    stage_reports: Mapping[str, RunReport],
    pretrain_summary: Mapping[str, Any] | None,
    chance: ChanceLevels,
    wall_times: Mapping[str, float],
    config: Mapping[str, Any],
) -> RunReport:
    """One ``quickstart`` report: every stage's metrics as ``stage.metric``, every timed stage as
    ``stage/timed-stage``, the chance levels and wall times in ``extra``."""
    report = RunReport(kind="evaluation", task="quickstart", dataset="synthetic", split="test")
    levels = dict(chance.values)
    for stage, sub in stage_reports.items():  # a stage's own chance levels where the manifest has none
        for name, value in (sub.extra.get("chance") or {}).items():
            levels.setdefault(f"{stage}.{name}", float(value))
    chance = ChanceLevels(levels)
    if pretrain_summary is not None:
        for name, metric in pretrain_metrics(pretrain_summary).items():
            report.metrics[f"pretrain.{name}"] = metric
    for stage, sub in stage_reports.items():
        for name, metric in sub.metrics.items():
            report.metrics[f"{stage}.{name}"] = metric
        for key, timed in sub.stages.items():
            report.stages[f"{stage}/{key}"] = timed
        if report.environment.torch == "" and sub.environment.torch:
            report.environment = sub.environment
    report.config = dict(config)
    report.extra = {
        "chance": {k: v for k, v in chance.values.items() if k in report.metrics},
        "wall_time_s": dict(wall_times),
        "above_chance": above_chance(report, chance),
    }
    return report


CLEAR_MARGIN = 5.0
"""Points above chance for a metric to count as clearly above it (not only by noise)."""


def above_chance(report: RunReport, chance: ChanceLevels) -> dict[str, bool]:
    """For every judged headline metric with a chance level (not :data:`SECONDARY`): whether it beats chance by
    :data:`CLEAR_MARGIN` points."""
    out = {}
    for stage, names in HEADLINES.items():
        for name in names:
            key = f"{stage}.{name}"
            level = chance.get(key)
            if key in report.metrics and level is not None and key not in SECONDARY:
                out[key] = report.metrics[key].value > level + CLEAR_MARGIN
    return out


def summary_rows(report: RunReport) -> list[tuple[str, str, str, str, str]]:
    """(stage, metric, measured, chance, verdict) for the headline metrics present in ``report``."""
    chance = report.extra.get("chance", {})
    rows = []
    for stage, names in HEADLINES.items():
        for name in names:
            key = f"{stage}.{name}"
            if key not in report.metrics:
                continue
            value = report.metrics[key].value
            level = chance.get(key)
            clear = level is not None and value > level + CLEAR_MARGIN
            verdict = (
                "" if level is None else ("clearly above chance" if clear else "NOT clearly above chance")
            )
            if verdict and key in SECONDARY:
                verdict += " (not judged)"
            shown = report.metrics[key].formatted(1)
            rows.append((stage, name, shown, "" if level is None else f"{level:.1f}", verdict))
    return rows


def summary_markdown(report: RunReport, figures: Sequence[Path] = ()) -> str:
    """The quickstart page: headline table against chance, wall time per stage, then the figures."""
    from tabulate import tabulate

    lines = [
        "# albef quickstart: the whole method on the synthetic world",
        "",
        "Pretraining (ITC + ITM + MLM) from scratch, then finetuning and evaluation on every downstream task, "
        "on the test splits of the embedded synthetic world; the compositional probes score the model after a "
        "second pretraining stage in which ITM alone trains on relation and swap pairs. Percentages; chance = a "
        "random ranking, the majority answer (VQA), the majority label (NLVR², SNLI-VE), random consistency, a "
        "random proposal box (grounding) or a random preference (the compositional probes; ITC's are shown, "
        "not judged).",
        "",
        tabulate(
            summary_rows(report),
            headers=("stage", "metric", "measured", "chance", ""),
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
        "## Wall time per stage",
        "",
        tabulate(
            [(k, f"{v:.0f} s") for k, v in report.extra.get("wall_time_s", {}).items()],
            headers=("stage", "wall time"),
            tablefmt="github",
        ),
        "",
    ]
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


def read_loss_curves(
    metrics_jsonl: Path, parts: Sequence[str] = ("itc_loss", "itm_loss", "mlm_loss")
) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per loss part from a ``metrics.jsonl`` (validation records are skipped)."""
    curves: dict[str, list[tuple[int, float]]] = {p: [] for p in parts}
    for line in metrics_jsonl.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for part in parts:
            if record.get(part) is not None:
                curves[part].append((int(record["step"]), float(record[part])))
    return {k: v for k, v in curves.items() if v}


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` points (shorter at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_pipeline(
    report: RunReport, loss_curves: Mapping[str, Mapping[str, list[tuple[int, float]]]], out_dir: Path
) -> list[Path]:
    """Loss curves of each training stage, headline metrics against chance, throughput per timed stage."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stage, curves in loss_curves.items():
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for part, points in curves.items():
            steps = [s for s, _ in points]
            ax.plot(steps, smooth([v for _, v in points], 25), label=part)
        ax.set(xlabel="step", ylabel="loss (moving average of 25 steps)", title=f"{stage}: training losses")
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"loss_{stage}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    rows = summary_rows(report)
    if rows:
        fig, ax = plt.subplots(figsize=(7.2, 0.45 * len(rows) + 1.2))
        labels = [f"{s}.{m}" for s, m, *_ in rows]
        # The values themselves: the table's "measured" column is text ("58.8 ± 2.7" with an interval).
        measured = [report.metrics[label].value for label in labels]
        chance = [float(report.extra.get("chance", {}).get(label, 0.0)) for label in labels]
        y = range(len(rows))
        ax.barh([i + 0.2 for i in y], measured, height=0.4, label="measured")
        ax.barh([i - 0.2 for i in y], chance, height=0.4, label="chance", color="0.7")
        ax.set_yticks(list(y), labels)
        ax.invert_yaxis()
        ax.set(xlabel="%", title="every task against its chance level")
        # Outside the axes, so that no bar is hidden behind it.
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        fig.tight_layout()
        path = out_dir / "tasks_vs_chance.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if report.stages:
        fig, ax = plt.subplots(figsize=(7.2, 0.35 * len(report.stages) + 1.2))
        names = list(report.stages)
        ax.barh(names, [report.stages[n].items_per_s for n in names])
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set(xlabel="items/s (log)", title="evaluation throughput per stage")
        fig.tight_layout()
        path = out_dir / "throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
