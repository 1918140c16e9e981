"""Entry point: ``albef <command> ...`` and ``python -m albef``.

Each subcommand lives in its own module exposing ``register(subparsers)``; that function adds the
subparser and sets ``handler`` (a callable ``(args) -> int``). Heavy imports happen inside handlers so that
``albef --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from albef.errors import (
    EXIT_CODES,
    EXIT_SIGINT,
    AlbefError,
    RunInterrupted,
    StorageError,
    is_out_of_space,
    storage_error,
)
from albef.progress import progress_enabled
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


DEBUG_ENV = "ALBEF_DEBUG"
"""Set to 1 (or pass ``--debug``) to see the traceback of an expected failure instead of its one line."""


def _exit_codes_epilog() -> str:
    rows = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)
    return (
        "exit status:\n" + rows + "\n\nAn expected failure prints one line naming what and where; --debug "
        f"(or {DEBUG_ENV}=1) shows its traceback."
    )


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
        epilog=_exit_codes_epilog(),
    )
    parser.add_argument(
        "--debug", action="store_true", help=f"show tracebacks of expected failures ({DEBUG_ENV}=1)"
    )
    parser.add_argument("--version", action="version", version=f"albef {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit status (:data:`albef.errors.EXIT_CODES`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.command is None else 2
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))  # torchrun's, or srun's
    show_bars = not getattr(args, "no_progress", False) and rank == "0"
    try:
        with progress_enabled(show_bars):
            return int(handler(args) or 0)
    except AlbefError as err:
        if debug:
            raise
        what = "" if isinstance(err, RunInterrupted) else "error: "
        print(f"albef {args.command}: {what}{err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        if debug or not is_out_of_space(err):
            raise
        print(f"albef {args.command}: error: {storage_error(err.filename or '?', err)}", file=sys.stderr)
        return StorageError.exit_code
    except KeyboardInterrupt:
        print(f"albef {args.command}: interrupted", file=sys.stderr)
        return EXIT_SIGINT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
