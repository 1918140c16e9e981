"""``albef verify-reference DIR``: compare our models with the official reference fixtures."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from albef.verification.compare import CheckRow

TABLE_HEADERS = ("file", "output", "max abs diff", "status", "detail")
DETAIL_WIDTH = 120


def register(subparsers: Any) -> None:
    """Add the ``verify-reference`` subcommand."""
    parser = subparsers.add_parser(
        "verify-reference",
        help="check our models against the official reference fixtures (../shared/reference/official_tiny)",
        description=(
            "Load every fixture file (*.pt) in DIR, build our model from its config, load its state dict "
            "strictly, recompute every output we can compute and compare it with the official one "
            "(float: atol 1e-5, rtol 1e-4; integers exactly). Outputs we cannot compute yet are reported as "
            "skipped. Exit status: 0 when nothing failed, 1 on any failure (an unreadable or unknown fixture "
            "file is a failure), 2 when DIR holds no fixture."
        ),
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="folder of reference fixture files")
    parser.add_argument("--strict", action="store_true", help="count every skipped output as a failure")
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME",
        help="keep only these checks: a kind (pretrain), a file (vqa.pt) or <kind>.<output> (fnmatch patterns)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="OUT", dest="json_out", help="also write the rows as JSON"
    )
    parser.set_defaults(handler=_run)


def format_rows(rows: Sequence[CheckRow]) -> str:
    """The rows as a plain-text table, followed by a one-line summary."""
    from tabulate import tabulate

    table = [
        (
            row.file,
            row.output,
            "-" if row.max_abs_diff is None else f"{row.max_abs_diff:.3g}",
            row.status_text,
            "" if row.status == "skipped" else _one_line(row.detail),
        )
        for row in rows
    ]
    counts = {status: sum(row.status == status for row in rows) for status in ("pass", "fail", "skipped")}
    summary = f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped"
    return tabulate(table, headers=TABLE_HEADERS, tablefmt="simple", disable_numparse=True) + "\n\n" + summary


def _one_line(text: str, width: int = DETAIL_WIDTH) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``width`` characters; the JSON keeps it whole."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def rows_to_json(rows: Sequence[CheckRow], directory: Path, strict: bool) -> dict[str, Any]:
    """The JSON record of a run: where, whether strict, the exit status and every row.

    A non-finite ``max_abs_diff`` (a shape or key mismatch) is written as ``null``; the row's ``detail`` says why.
    """
    from dataclasses import asdict

    from albef.verification.reference import exit_status

    def record(row: CheckRow) -> dict[str, Any]:
        fields = asdict(row)
        if row.max_abs_diff is not None and not math.isfinite(row.max_abs_diff):
            fields["max_abs_diff"] = None
        return fields

    return {
        "directory": str(directory),
        "strict": strict,
        "exit_status": exit_status(rows),
        "rows": [record(row) for row in rows],
    }


def _run(args: argparse.Namespace) -> int:
    """Run the checks, print the table, optionally write JSON; 1 on any failure."""
    from albef.cli.main import AlbefError
    from albef.verification.reference import ReferenceDirError, exit_status, verify_reference

    try:
        rows = verify_reference(args.directory, only=args.only, strict=args.strict)
    except ReferenceDirError as err:
        raise AlbefError(str(err)) from err
    print(format_rows(rows))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        record = rows_to_json(rows, args.directory, args.strict)
        args.json_out.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return exit_status(rows)
