"""``albef reproduce``: the evaluations behind each paper table, with the official protocol, vs the paper.

Each target is a list of :class:`Evaluation` (a config preset, a split, overrides of the protocol); each runs
through :func:`albef.workflows.evaluate.run_evaluation`, the same step as ``albef evaluate <task>``, on the
official presets. Every report is then *stamped* with the paper's naming before comparing (rule below), and
``<out>/paper.md`` holds measured vs paper, and the paper cells of the targets that were not measured.

Stamping rule: the evaluators name splits by the files they read (``dev``/``test``/``val``); the paper tables
name them by the benchmark (``test-dev``, ``test-P``, ...). After each evaluation its report's ``split`` is set
to the paper split of that evaluation (the evaluator's split is kept in ``extra["eval_split"]``) and
``extra["zero_shot"]`` is set (``True`` only for ``zeroshot-flickr``). ``dataset`` is left as the evaluator
wrote it (``coco``, ``flickr30k``, ``vqa_v2``, ``nlvr2``, ``snli_ve`` for the official presets).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from albef.config import load_config
from albef.errors import ConfigError
from albef.fileio import atomic_write_text
from albef.reporting.schema import RunReport
from albef.workflows.evaluate import build_task, run_evaluation


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a target.

    Attributes:
        name: Sub-directory of the target's output directory and the label in ``paper.md``.
        config: The preset.
        split: The split the evaluator reads.
        paper_split: The split name of the paper tables, stamped on the report.
        sets: Overrides of the preset that belong to the protocol.
        zero_shot: Stamped as ``extra["zero_shot"]``.
    """

    name: str
    config: str
    split: str
    paper_split: str
    sets: tuple[str, ...] = ()
    zero_shot: bool = False

    def overrides(self, data_root: str, extra: list[str]) -> list[str]:
        """The protocol's overrides, the data root, then the user's ``--set`` (which win)."""
        return [*self.sets, f"data.root={data_root}", *extra]

    def command(self, checkpoint: str, out: Path, data_root: str, extra: list[str]) -> str:
        """The equivalent ``albef evaluate`` command line."""
        task = load_config(self.config, [*self.sets, *extra]).task
        argv = ["albef", "evaluate", task, "--config", self.config, "--split", self.split]
        argv += ["--checkpoint", checkpoint, "--output-dir", str(out)]
        for override in self.overrides(data_root, extra):
            argv += ["--set", override]
        return shlex.join(argv)

    def protocol(self, extra: list[str]) -> str:
        """The protocol in words: resolution, k, evaluated split, paper split, setting."""
        cfg = load_config(self.config, [*self.sets, *extra])
        parts = [f"{cfg.model.vision.image_res} px"]
        if cfg.task in ("retrieval", "vqa"):
            parts.append(f"k {cfg.eval.k_test}")
        parts.append(f"split {self.split} -> paper split {self.paper_split}")
        parts.append("zero-shot" if self.zero_shot else "fine-tuned")
        return ", ".join(parts)


def _retrieval(config: str, dataset: str, zero_shot: bool = False) -> Evaluation:
    name = f"{dataset}-test" + ("-zeroshot" if zero_shot else "")
    return Evaluation(name, config, "test", "test", zero_shot=zero_shot)


TARGETS: dict[str, tuple[Evaluation, ...]] = {
    "retrieval-coco": (_retrieval("retrieval_coco", "coco"),),
    "retrieval-flickr": (_retrieval("retrieval_flickr", "flickr30k"),),
    "zeroshot-flickr": (_retrieval("retrieval_flickr", "flickr30k", zero_shot=True),),
    "vqa": (
        Evaluation("vqa-test", "vqa", "test", "test-dev"),
        Evaluation("vqa-val", "vqa", "val", "val", sets=("data.val_file=data/vqa_val.json",)),
    ),
    "nlvr": (Evaluation("nlvr-dev", "nlvr", "dev", "dev"), Evaluation("nlvr-test", "nlvr", "test", "test-P")),
    "ve": (Evaluation("ve-dev", "ve", "dev", "val"), Evaluation("ve-test", "ve", "test", "test")),
    "grounding": (
        Evaluation("grounding-val", "grounding", "val", "val"),
        Evaluation("grounding-test", "grounding", "test", "test"),
    ),
}
"""Target -> its evaluations, in order. The official protocol (resolution, ``eval.k_test``: 256 COCO, 128
Flickr30K and VQA) comes from the presets, so ``--set`` can shrink it for tests."""

ZERO_SHOT_SOURCE = "retrieval-coco"
"""``zeroshot-flickr`` evaluates this target's checkpoint when ``all`` is given none for it."""


def checkpoints_of(target: str, checkpoint: str | None, pairs: list[str]) -> dict[str, str]:
    """Target -> checkpoint for the targets of ``target``; raises ``ConfigError`` when one is missing."""
    given: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or name not in TARGETS or not path:
            raise ConfigError(
                f"--checkpoints {pair!r}: expected TARGET=PATH with TARGET in {', '.join(TARGETS)}"
            )
        given[name] = path
    targets = list(TARGETS) if target == "all" else [target]
    if checkpoint is not None:
        if target == "all":
            raise ConfigError("'all' needs --checkpoints TARGET=PATH ... (one checkpoint per target)")
        given.setdefault(target, checkpoint)
    if "zeroshot-flickr" in targets and ZERO_SHOT_SOURCE in given:
        given.setdefault("zeroshot-flickr", given[ZERO_SHOT_SOURCE])
    missing = [name for name in targets if name not in given]
    if missing:
        raise ConfigError(
            f"no checkpoint for {', '.join(missing)} (--checkpoint or --checkpoints TARGET=PATH)"
        )
    return {name: given[name] for name in targets}


def stamp_report(path: Path, evaluation: Evaluation) -> Any:
    """Give the report at ``path`` the paper's split and zero-shot setting (module docstring), save it back."""
    report = RunReport.load(path)
    report.extra["eval_split"] = report.split
    report.extra["zero_shot"] = evaluation.zero_shot
    report.split = evaluation.paper_split
    report.save(path)
    return report


def comparison_markdown(reports: list[Any], labels: list[str], model: str) -> str:
    """``paper.md``: measured vs paper for ``model``, then the cells of the reproduced tables not measured.

    Uncovered cells are listed only for the (task, dataset, setting) of the runs, so e.g. ``vqa`` lists
    VQA test-dev (scored by the server) and test-std, but not the retrieval tables.
    """
    from albef.reporting.paper import (
        load_paper_cells,
        paper_comparison_many,
        paper_markdown,
        run_setting,
    )

    cells = load_paper_cells()
    comparison = paper_comparison_many(reports, labels, model=model, cells=cells)
    scope = {(r.task, r.dataset, run_setting(r)) for r in reports}
    comparison.uncovered = [c for c in comparison.uncovered if (c.task, c.dataset, c.setting) in scope]
    title = f"# Reproduction: {model}\n\nRuns: " + ", ".join(f"`{label}`" for label in labels) + "\n\n"
    compared = {row.run for row in comparison.rows}
    other = [
        f"- `{label}` ({report.dataset} {report.split}): "
        + ", ".join(f"{name} {m.value:.2f}" for name, m in report.metrics.items() if m.group is None)
        for label, report in zip(labels, reports, strict=True)
        if label not in compared and report.metrics
    ]
    if other:
        other = ["", "### Measured without a paper cell", "", *other]
    return title + paper_markdown(comparison) + "\n".join(other) + ("\n" if other else "")


def reproduce(
    checkpoints: dict[str, str],
    data_root: str,
    out: Path,
    model: str,
    overrides: list[str] | None = None,
    dry_run: bool = False,
) -> str | None:
    """Run every evaluation of the targets in ``checkpoints`` into ``<out>/<target>/<evaluation>``, stamp the
    reports, write and return ``<out>/paper.md`` (with ``dry_run``: print the plan and commands only)."""
    from albef.reporting.paper import load_paper_cells, paper_models

    extra = list(overrides or [])
    models = paper_models(load_paper_cells())
    if model not in models:
        raise ConfigError(f"unknown paper model {model!r}; valid: {', '.join(models)}")
    plan = [(t, e, c) for t, c in checkpoints.items() for e in TARGETS[t]]
    if dry_run:
        for target, evaluation, checkpoint in plan:
            print(f"# {target}/{evaluation.name}: {evaluation.protocol(extra)}")
            print(evaluation.command(checkpoint, out / target / evaluation.name, data_root, extra))
        return None
    missing = sorted({path for path in checkpoints.values() if not Path(path).is_file()})
    if missing:
        raise ConfigError(f"no such checkpoint file: {', '.join(missing)}")
    reports, labels = [], []
    for target, evaluation, checkpoint in plan:
        print(f"== {target}: {evaluation.name}")
        directory = out / target / evaluation.name
        cfg = load_config(evaluation.config, evaluation.overrides(data_root, extra))
        report = run_evaluation(cfg, checkpoint, evaluation.split, out=directory)
        assert report is not None  # a single process writes
        stem = build_task(cfg).report_stem(evaluation.split)
        reports.append(stamp_report(directory / f"{stem}.json", evaluation))
        labels.append(f"{target}/{evaluation.name}")
    text = comparison_markdown(reports, labels, model)
    atomic_write_text(out / "paper.md", text)
    return text
