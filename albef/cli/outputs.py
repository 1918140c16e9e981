"""What every evaluation command does with its output files: never replace an earlier report unasked."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from albef.errors import RunFolderError


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--overwrite`` and ``--no-progress`` of the evaluation commands."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report (and result files) of an earlier evaluation in the same place (default: refuse)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def refuse_overwrite(paths: Iterable[str | Path], overwrite: bool) -> None:
    """Stop, before any work, when an output file exists and ``--overwrite`` was not given.

    Raises:
        RunFolderError: The first existing file, and the ways out.
    """
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise RunFolderError(
                f"{path} exists (an earlier evaluation); pass --overwrite to replace it, or write elsewhere "
                "(--out / --output-dir)"
            )
