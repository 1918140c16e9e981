"""Entry point: ``albef <command> ...`` and ``python -m albef``.

Each subcommand lives in its own module exposing ``register(subparsers)``; that function adds the
subparser and sets ``handler`` (a callable ``(args) -> int``). Heavy imports happen inside handlers so that
``albef --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from albef.version import __version__

# Order here is the order in ``albef --help``.
COMMAND_MODULES = (
    "albef.cli.quickstart",
    "albef.cli.train",
    "albef.cli.pretrain_ta",
    "albef.cli.finetune",
    "albef.cli.evaluate",
    "albef.cli.reproduce",
    "albef.cli.data",
    "albef.cli.config_cmd",
    "albef.cli.ls",
    "albef.cli.verify",
    "albef.cli.bench",
    "albef.cli.report",
)


class AlbefError(Exception):
    """An expected failure the CLI reports as one line (exit status 2), without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="albef",
        description=(
            "ALBEF (Align before Fuse) as a benchmark and evaluation harness: pretraining, finetuning and "
            "evaluation on COCO/Flickr30K retrieval, VQA v2 and NLVR2, with throughput reports. Every command "
            "defaults to the embedded synthetic world, so it runs offline on a CPU."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"albef {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit status (0 success, 1 failure/regression, 2 usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.command is None else 2
    from albef.config.io import ConfigError
    from albef.registry import UnknownNameError

    expected: tuple[type[BaseException], ...] = (AlbefError, ConfigError, UnknownNameError)
    try:
        extra = importlib.import_module("albef.data.errors")
        expected = (*expected, extra.DataError)
    except (ImportError, AttributeError):
        pass
    try:
        return int(handler(args) or 0)
    except expected as err:
        print(f"albef {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"albef {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
