"""``albef reproduce``: the evaluations behind each paper table, with the official protocol, vs the paper.

albef reproduce retrieval-coco --checkpoint coco_finetuned.pth --data-root /data
albef reproduce zeroshot-flickr --checkpoint coco_finetuned.pth --data-root /data --model "ALBEF 14M"
albef reproduce all --checkpoints retrieval-coco=coco.pth retrieval-flickr=flickr.pth vqa=vqa.pth \\
    nlvr=nlvr.pth ve=ve.pth --data-root /data
albef reproduce vqa --checkpoint vqa.pth --data-root /data --dry-run

Each target runs existing ``albef evaluate ...`` commands (through :func:`albef.cli.main.main`) on the
official presets, then *stamps* every report with the paper's naming before comparing (rule below), and
writes ``<out>/paper.md``: measured vs paper, and the paper cells of the targets that were not measured.

Stamping rule: the evaluators name splits by the files they read (``dev``/``test``/``val``); the paper tables
name them by the benchmark (``test-dev``, ``test-P``, ...). After each evaluation its report's ``split`` is set
to the paper split of that evaluation (the evaluator's split is kept in ``extra["eval_split"]``) and
``extra["zero_shot"]`` is set (``True`` only for ``zeroshot-flickr``). ``dataset`` is left as the evaluator
wrote it (``coco``, ``flickr30k``, ``vqa_v2``, ``nlvr2``, ``snli_ve`` for the official presets).
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Run the evaluations behind each ALBEF paper table with the official protocol and compare with the paper:

  retrieval-coco    COCO 5K test, 384 px, ITC then ITM re-rank of the top k=256   (fine-tuned table)
  retrieval-flickr  Flickr30K 1K test, 384 px, k=128                              (fine-tuned table)
  zeroshot-flickr   the COCO-fine-tuned checkpoint on Flickr30K 1K test, k=128    (zero-shot table)
  vqa               test split -> evaluation-server file (scored as test-dev on the server), val scored
                    locally (data/vqa_val.json carries the annotators' answers; not a paper cell)
  nlvr              NLVR2 dev and test-P accuracy (+ consistency, predictions CSV)
  ve                SNLI-VE val (data/ve_dev.json) and test accuracy
  all               every target above (--checkpoints target=PATH ...)

Reports go to <out>/<target>/, the comparison to <out>/paper.md. Paths in the presets are relative to
--data-root (official ALBEF layout: data/*.json, coco/images, flickr30k, nlvr2, snli-ve/images).
"""


@dataclass(frozen=True)
class Evaluation:
    """One ``albef evaluate`` run of a target.

    Attributes:
        name: Sub-directory of the target's output directory and the label in ``paper.md``.
        command: The ``albef`` argv without checkpoint, data root, output and overrides.
        out_flag: The command's output-directory flag (``--out`` or ``--output-dir``).
        report: The report file the command writes in its output directory.
        paper_split: The split name of the paper tables, stamped on the report.
        zero_shot: Stamped as ``extra["zero_shot"]``.
    """

    name: str
    command: tuple[str, ...]
    out_flag: str
    report: str
    paper_split: str
    zero_shot: bool = False


def _retrieval(config: str, dataset: str, zero_shot: bool = False) -> Evaluation:
    command = ("evaluate", "retrieval", "--config", config, "--split", "test")
    name = f"{dataset}-test" + ("-zeroshot" if zero_shot else "")
    return Evaluation(name, command, "--out", f"retrieval-{dataset}-test.json", "test", zero_shot)


def _split_eval(task: str, split: str, paper_split: str) -> Evaluation:
    command = ("evaluate", task, "--config", task, "--split", split)
    return Evaluation(f"{task}-{split}", command, "--output-dir", f"{task}_{split}_report.json", paper_split)


TARGETS: dict[str, tuple[Evaluation, ...]] = {
    "retrieval-coco": (_retrieval("retrieval_coco", "coco"),),
    "retrieval-flickr": (_retrieval("retrieval_flickr", "flickr30k"),),
    "zeroshot-flickr": (_retrieval("retrieval_flickr", "flickr30k", zero_shot=True),),
    "vqa": (
        Evaluation(
            "vqa-test",
            ("evaluate", "vqa", "--config", "vqa", "--split", "test"),
            "--output-dir",
            "vqa_test_report.json",
            "test-dev",
        ),
        Evaluation(
            "vqa-val",
            (
                "evaluate",
                "vqa",
                "--config",
                "vqa",
                "--split",
                "val",
                "--set",
                "data.val_file=data/vqa_val.json",
            ),
            "--output-dir",
            "vqa_val_report.json",
            "val",
        ),
    ),
    "nlvr": (_split_eval("nlvr", "dev", "dev"), _split_eval("nlvr", "test", "test-P")),
    "ve": (_split_eval("ve", "dev", "val"), _split_eval("ve", "test", "test")),
}
"""Target -> its evaluations, in order. The official protocol (resolution, ``eval.k_test``: 256 COCO, 128
Flickr30K and VQA) comes from the presets, so ``--set`` can shrink it for tests."""

ZERO_SHOT_SOURCE = "retrieval-coco"
"""``zeroshot-flickr`` evaluates this target's checkpoint when ``all`` is given none for it."""


def register(subparsers: Any) -> None:
    """Add ``albef reproduce``."""
    parser = subparsers.add_parser(
        "reproduce",
        help="run the evaluations behind each paper table (official protocol) and compare with the paper",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", choices=(*TARGETS, "all"), help="which paper table(s) to reproduce")
    parser.add_argument("--checkpoint", metavar="PATH", help="the target's fine-tuned checkpoint")
    parser.add_argument(
        "--checkpoints",
        nargs="+",
        default=[],
        metavar="TARGET=PATH",
        help="per-target checkpoints (for 'all'; zeroshot-flickr defaults to retrieval-coco's)",
    )
    parser.add_argument("--data-root", required=True, metavar="DIR", help="root of the official data layout")
    parser.add_argument("--out", default="reports/reproduce", help="output directory (default: %(default)s)")
    parser.add_argument(
        "--model", default="ALBEF 4M", help="paper column to compare with (default: %(default)s)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed to every evaluation (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.set_defaults(handler=_reproduce)


def checkpoints_of(target: str, checkpoint: str | None, pairs: list[str]) -> dict[str, str]:
    """Target -> checkpoint for the targets of ``target``; raises ``AlbefError`` when one is missing."""
    from albef.cli.main import AlbefError

    given: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or name not in TARGETS or not path:
            raise AlbefError(
                f"--checkpoints {pair!r}: expected TARGET=PATH with TARGET in {', '.join(TARGETS)}"
            )
        given[name] = path
    targets = list(TARGETS) if target == "all" else [target]
    if checkpoint is not None:
        if target == "all":
            raise AlbefError("'all' needs --checkpoints TARGET=PATH ... (one checkpoint per target)")
        given.setdefault(target, checkpoint)
    if "zeroshot-flickr" in targets and ZERO_SHOT_SOURCE in given:
        given.setdefault("zeroshot-flickr", given[ZERO_SHOT_SOURCE])
    missing = [name for name in targets if name not in given]
    if missing:
        raise AlbefError(
            f"no checkpoint for {', '.join(missing)} (--checkpoint or --checkpoints TARGET=PATH)"
        )
    return {name: given[name] for name in targets}


def evaluation_argv(
    evaluation: Evaluation, checkpoint: str, data_root: str, out: Path, overrides: list[str]
) -> list[str]:
    """The full ``albef`` argv of one evaluation (``--set`` overrides after the protocol's own)."""
    argv = [*evaluation.command, "--checkpoint", checkpoint, evaluation.out_flag, str(out)]
    argv += ["--set", f"data.root={data_root}"]
    for override in overrides:
        argv += ["--set", override]
    return argv


def protocol(evaluation: Evaluation, overrides: list[str]) -> str:
    """The protocol of one evaluation in words: resolution, k, evaluated split, paper split, setting."""
    from albef.config import load_config

    command = list(evaluation.command)
    sets = [command[i + 1] for i, arg in enumerate(command) if arg == "--set"]
    cfg = load_config(command[command.index("--config") + 1], [*sets, *overrides])
    parts = [f"{cfg.model.vision.image_res} px"]
    if cfg.task in ("retrieval", "vqa"):
        parts.append(f"k {cfg.eval.k_test}")
    parts.append(f"split {command[command.index('--split') + 1]} -> paper split {evaluation.paper_split}")
    parts.append("zero-shot" if evaluation.zero_shot else "fine-tuned")
    return ", ".join(parts)


def stamp_report(path: Path, evaluation: Evaluation) -> Any:
    """Give the report at ``path`` the paper's split and zero-shot setting (module docstring), save it back."""
    from albef.reporting.schema import RunReport

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


def _reproduce(args: argparse.Namespace) -> int:
    from albef.cli.main import AlbefError, main
    from albef.reporting.paper import load_paper_cells, paper_models

    models = paper_models(load_paper_cells())
    if args.model not in models:
        raise AlbefError(f"unknown paper model {args.model!r}; valid: {', '.join(models)}")
    checkpoints = checkpoints_of(args.target, args.checkpoint, args.checkpoints)
    out = Path(args.out)
    plan = []
    for target, checkpoint in checkpoints.items():
        for evaluation in TARGETS[target]:
            directory = out / target / evaluation.name
            plan.append(
                (
                    target,
                    evaluation,
                    evaluation_argv(evaluation, checkpoint, args.data_root, directory, args.overrides),
                )
            )
    if args.dry_run:
        for target, evaluation, argv in plan:
            print(f"# {target}/{evaluation.name}: {protocol(evaluation, args.overrides)}")
            print(shlex.join(["albef", *argv]))
        return 0
    missing = sorted({path for path in checkpoints.values() if not Path(path).is_file()})
    if missing:
        raise AlbefError(f"no such checkpoint file: {', '.join(missing)}")
    reports, labels = [], []
    for target, evaluation, argv in plan:
        print(f"== {target}: {evaluation.name}")
        code = main(argv)
        if code != 0:
            raise AlbefError(f"{target} {evaluation.name} failed (exit {code}): albef {shlex.join(argv)}")
        path = out / target / evaluation.name / evaluation.report
        reports.append(stamp_report(path, evaluation))
        labels.append(f"{target}/{evaluation.name}")
    text = comparison_markdown(reports, labels, args.model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"comparison: {out / 'paper.md'}")
    return 0
