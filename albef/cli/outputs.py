"""What every evaluation command does with its output files: never replace an earlier report unasked."""

from __future__ import annotations

import argparse


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--overwrite`` and ``--no-progress`` of the evaluation commands."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report (and result files) of an earlier evaluation in the same place (default: refuse)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
