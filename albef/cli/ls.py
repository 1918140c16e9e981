"""``albef ls {configs,...}``: list what the other commands can name."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _configs() -> list[tuple[str, str]]:
    from albef.config.presets import describe_preset, list_presets

    return [(name, describe_preset(name)) for name in list_presets()]


def _synthetic_sizes() -> list[tuple[str, str]]:
    from albef.data.synthetic import SIZES

    return [(name, spec.description) for name, spec in SIZES.items()]


def _models() -> list[tuple[str, str]]:
    from albef.models.builders import MODEL_PRESETS

    return [(name, MODEL_PRESETS.describe(name)) for name in MODEL_PRESETS.names()]


def _tasks() -> list[tuple[str, str]]:
    from albef.models.builders import TASK_MODELS

    return [(name, TASK_MODELS.describe(name)) for name in TASK_MODELS.names()]


def _datasets() -> list[tuple[str, str]]:
    from albef.data.prepare import DATASETS

    return [(name, DATASETS.describe(name)) for name in DATASETS.names()]


LISTINGS: dict[str, tuple[str, Callable[[], list[tuple[str, str]]]]] = {
    "configs": ("experiment presets for --config", _configs),
    "models": ("model presets (sizes) for the task models", _models),
    "tasks": ("task models that configs and checkpoints name", _tasks),
    "datasets": ("real-dataset recipes for albef data prepare", _datasets),
    "synthetic-sizes": ("sizes of the embedded synthetic world (albef data synth --size)", _synthetic_sizes),
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ls",
        help="list what can be named: configs, models, ...",
        description="List the names other commands accept. "
        + "; ".join(f"{k}: {v[0]}" for k, v in LISTINGS.items()),
    )
    parser.add_argument("what", choices=sorted(LISTINGS), help="which registry to list")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = LISTINGS[args.what][1]()
    print(tabulate(rows, headers=["name", "description"], tablefmt="simple"))
    return 0
