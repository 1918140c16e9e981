"""``albef evaluate <task>``: one subcommand per registered task that has an evaluation description, and
the offline scorers of result files (:mod:`albef.cli.score`).

Every task subcommand takes the config, ``--checkpoint``, ``--split`` (the task's splits), ``--output-dir``
(alias ``--out``), ``--overwrite`` and the task's own options (:attr:`albef.tasks.Task.evaluate_options`),
and runs :func:`albef.workflows.evaluate.run_evaluation`. A new task appears here by registering itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from albef.cli import score
from albef.cli.config_cmd import add_config_arguments
from albef.cli.outputs import add_output_arguments
from albef.cli.task_options import add_options, described_parser, option_values
from albef.tasks import all_tasks


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint (retrieval, VQA, NLVR2, SNLI-VE, grounding, Winoground, SugarCrepe, ARO) or "
        "score a result file",
        description=(
            "Evaluate a checkpoint on a split with the official protocol and write a run report (metrics with "
            "95% intervals + per-stage throughput and latency) as JSON and Markdown, plus the task's own files; "
            "or score a result file offline exactly as the official tools do (vqa-score, nlvr-score)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = parser.add_subparsers(title="tasks", dest="task", metavar="<task>", required=True)
    for name, task in all_tasks():
        if task.evaluate_description is None:
            continue
        sub = described_parser(tasks, name, task.help, task.evaluate_description)
        add_config_arguments(sub, default=task.default_config or f"synthetic_{name}")
        sub.add_argument(
            "--checkpoint", required=True, metavar="PATH", help="weights to evaluate (official ALBEF or ours)"
        )
        sub.add_argument(
            "--split", choices=task.splits, default=task.splits[0], help=f"default: {task.splits[0]}"
        )
        sub.add_argument(
            "--output-dir",
            "--out",
            dest="output_dir",
            help="where the report and the task's files go (default: runtime.output_dir; for retrieval "
            "<runtime.output_dir>/eval)",
        )
        add_options(sub, task.evaluate_options)
        sub.add_argument(
            "--log-samples",
            action="store_true",
            help="also write every item's record as <report name>-samples.jsonl (retrieval: each query's top 10 "
            "with scores; VQA: each question's ranked answers; classification: each example's logits; "
            "benchmarks: each example's scores with every scorer)",
        )
        add_output_arguments(sub)
        sub.set_defaults(handler=_evaluate, task_class=task, task_name=name)
    score.register(tasks)


def _evaluate(args: argparse.Namespace) -> int:
    from albef.config import load_config
    from albef.workflows.evaluate import run_evaluation
    from albef.workflows.train import end_run

    cfg = load_config(args.config, args.overrides)
    try:
        run_evaluation(
            cfg,
            args.checkpoint,
            args.split,
            out=Path(args.output_dir) if args.output_dir else None,
            options=option_values(args, args.task_class.evaluate_options),
            overwrite=args.overwrite,
            task=args.task_name,
            log_samples=args.log_samples,
        )
    finally:
        end_run()
    return 0
