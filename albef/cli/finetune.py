"""``albef finetune <task>``: finetune on one downstream task with validation each epoch.

Each task's subcommand lives in its task module (:data:`TASK_MODULES`), which exposes
``register_finetune(subparsers)``; the shared options come from :func:`albef.cli.train.add_train_arguments`.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

TASK_MODULES = ("albef.cli.retrieval", "albef.cli.vqa", "albef.cli.nlvr")
"""Modules with ``register_finetune`` and ``register_evaluate``; their order is the order in ``--help``."""


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
    for name in TASK_MODULES:
        importlib.import_module(name).register_finetune(tasks)
