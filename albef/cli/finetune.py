"""``albef finetune <task>``: one subcommand per registered task that has a finetuning description.

Every subcommand takes the shared training options (:func:`albef.cli.train.add_train_arguments`), the task's
own options (:attr:`albef.tasks.Task.finetune_options`) and ``--no-test``, and runs
:func:`albef.workflows.finetune.finetune_task`. A new task appears here by registering itself.
"""

from __future__ import annotations

import argparse
from typing import Any

from albef.cli.task_options import add_options, described_parser, option_overrides, option_values
from albef.cli.train import add_train_arguments, resolve_config
from albef.tasks import all_tasks


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="finetune on retrieval, VQA, NLVR2 or SNLI-VE (validation each epoch, best checkpoint, test report)",
        description=(
            "Finetune from a pretraining (or finetuned) checkpoint on one task. Every task validates after "
            "each epoch, keeps best.pt by its selection metric, evaluates the test split with it and writes "
            "run reports (JSON + Markdown) in the output directory. Defaults run on the synthetic world."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = parser.add_subparsers(title="tasks", dest="task", metavar="<task>", required=True)
    for name, task in all_tasks():
        if task.finetune_description is None:
            continue
        sub = described_parser(tasks, name, task.help, task.finetune_description)
        add_train_arguments(sub, f"synthetic_{name}")
        add_options(sub, task.finetune_options)
        sub.add_argument("--no-test", action="store_true", help="skip evaluating the test split at the end")
        sub.set_defaults(handler=_finetune, task_class=task, task_name=name)


def _finetune(args: argparse.Namespace) -> int:
    from albef.workflows.evaluate import build_task
    from albef.workflows.finetune import finetune_task

    options = args.task_class.finetune_options
    args.overrides = [*args.overrides, *option_overrides(args, options)]
    cfg = resolve_config(args)
    build_task(cfg, args.task_name)  # refuses another task's config before any work
    finetune_task(
        cfg,
        checkpoint=args.checkpoint,
        resume=args.resume,
        show_progress=not args.no_progress,
        test=not args.no_test,
        options=option_values(args, options),
    )
    return 0
