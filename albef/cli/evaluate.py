"""``albef evaluate <task>``: evaluate a checkpoint and write a run report; score result files offline.

Each task's subcommands live in its task module (:data:`albef.cli.finetune.TASK_MODULES`), which exposes
``register_evaluate(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from albef.cli.finetune import TASK_MODULES


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint (retrieval, VQA, NLVR2, SNLI-VE) or score a result file",
        description=(
            "Evaluate a checkpoint on a split with the official protocol and write a run report (metrics + "
            "per-stage throughput and latency) as JSON and Markdown; or score a result file offline exactly "
            "as the official tools do (vqa-score, nlvr-score)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = parser.add_subparsers(title="tasks", dest="task", metavar="<task>", required=True)
    for name in TASK_MODULES:
        importlib.import_module(name).register_evaluate(tasks)
