"""``albef report {render,paper,compare,clip-benchmark}``: render run reports (and a leaderboard across them), set
them against the paper, gate regressions, export them as CLIP_benchmark results.

Every action reads run report JSON files (:class:`albef.reporting.RunReport`). Unusable input (an unreadable
file, another schema version, reports that cannot be compared, an unknown paper model) is one line on stderr
and exit status 2, returned by the handler itself so the status holds however the handler is called;
``compare`` exits 1 on a regression and 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from albef.errors import DataError

if TYPE_CHECKING:
    from albef.reporting.schema import RunReport

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: Any) -> None:
    """Add the ``report`` command and its ``render``, ``paper`` and ``compare`` actions."""
    parser = subparsers.add_parser(
        "report",
        help="render run reports, compare them with the paper tables, gate regressions",
        description=(
            "Work with run report JSON files (written by evaluate, bench and train): render them as "
            "Markdown/CSV/plots, compare them with the published ALBEF numbers, or compare a run with a "
            "baseline (exit 1 on a regression). Unusable input exits with status 2."
        ),
    )
    actions = parser.add_subparsers(title="actions", dest="action", metavar="<action>", required=True)
    _add_render(actions)
    _add_paper(actions)
    _add_compare(actions)
    _add_clip_benchmark(actions)


def _add_render(actions: Any) -> None:
    parser = actions.add_parser(
        "render",
        help="write report.md, metrics.csv, stages.csv and plots (plus a comparison for several runs)",
        description=(
            "Render each run report as report.md, metrics.csv, stages.csv and PNG plots. With several "
            "reports, each goes to OUT/<name>/; OUT/comparison.md and comparison.csv set them side by side (a "
            "row per run) and OUT/leaderboard.md and leaderboard.csv make one leaderboard: a row per "
            "checkpoint, a column per task, dataset, split and headline metric, with 95 % intervals."
        ),
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN.json", help="run report files")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: next to the first report, named after it)"
    )
    parser.set_defaults(handler=partial(_guarded, "render", _render))


def _add_paper(actions: Any) -> None:
    parser = actions.add_parser(
        "paper",
        help="compare runs with the published ALBEF (and BLIP) numbers",
        description=(
            "Match each run to the paper cells of the same task, dataset and split (the zero-shot table "
            "when the report's extra.zero_shot is true) and print measured - paper, then the paper cells "
            "no run covers."
        ),
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN.json", help="run report files")
    parser.add_argument("--model", help='paper model to compare with ("ALBEF 4M", "ALBEF 14M"; default all)')
    parser.add_argument("--out", type=Path, metavar="FILE.md", help="also write the Markdown here")
    parser.set_defaults(handler=partial(_guarded, "paper", _paper))


def _add_compare(actions: Any) -> None:
    parser = actions.add_parser(
        "compare",
        help="regression gate: compare a run with a baseline (exit 1 on a regression)",
        description=(
            "Compare every metric and every stage's items/s of the baseline with the current run. A metric "
            "regresses when it moves against its direction by more than its tolerance: the combined 95 % "
            "bootstrap interval sqrt(h_base^2 + h_current^2) where both reports carry one, else --metric-tol "
            "points (--tol NAME=POINTS overrides either; --no-intervals uses --metric-tol everywhere). A stage "
            "regresses when its items/s drop by more than --speed-tol. A baseline metric missing from the "
            "current run is a failure. Exit status: 0 no regression, 1 regression, 2 unusable input."
        ),
    )
    parser.add_argument("--baseline", type=Path, required=True, metavar="B.json", help="the reference run")
    parser.add_argument("--current", type=Path, required=True, metavar="C.json", help="the run under test")
    parser.add_argument(
        "--metric-tol",
        type=_non_negative,
        default=1.0,
        metavar="POINTS",
        help="tolerance of metrics without intervals on both sides (1.0)",
    )
    parser.add_argument(
        "--speed-tol",
        type=_non_negative,
        default=0.10,
        metavar="FRACTION",
        help="items/s drop allowed (0.10)",
    )
    parser.add_argument(
        "--tol",
        action="append",
        default=[],
        type=_name_tolerance,
        metavar="NAME=POINTS",
        help="tolerance of one metric (repeatable), e.g. --tol txt_r1=0.5",
    )
    parser.add_argument("--no-speed", action="store_true", help="compare metrics only")
    parser.add_argument(
        "--no-intervals",
        action="store_true",
        help="ignore the reports' intervals: --metric-tol for every metric",
    )
    parser.set_defaults(handler=partial(_guarded, "compare", _compare))


def _add_clip_benchmark(actions: Any) -> None:
    parser = actions.add_parser(
        "clip-benchmark",
        help="write run reports as CLIP_benchmark result JSON files (for clip_benchmark build)",
        description=(
            "Write each retrieval, NLVR2, SNLI-VE, Winoground, SugarCrepe or ARO report as a CLIP_benchmark "
            "result file OUT/<report name>.json (dataset, model, pretrained, task, metrics as fractions, "
            "language, plus albef_* keys), so that clip_benchmark build and the leaderboards reading its files "
            "take them. Other reports (pretraining, VQA, grounding) are listed as skipped; none exported exits 2."
        ),
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN.json", help="run report files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", default="albef", help="the model column (default: %(default)s)")
    parser.add_argument("--pretrained", help="the pretrained column (default: each checkpoint's file name)")
    parser.set_defaults(handler=partial(_guarded, "clip-benchmark", _clip_benchmark))


def _non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _name_tolerance(text: str) -> tuple[str, float]:
    """An argparse type for ``NAME=POINTS``."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=POINTS, got {text!r}")
    return name, _non_negative(value)


def _guarded(action: str, handler: Handler, args: argparse.Namespace) -> int:
    """Run ``handler``; an expected input error becomes one stderr line and exit status 2."""
    from albef.cli.main import AlbefError

    try:
        return handler(args)
    except AlbefError as err:
        print(f"albef report {action}: error: {err}", file=sys.stderr)
        return 2


def load_reports(paths: Sequence[Path]) -> list[RunReport]:
    """Read run reports; any unusable file raises :class:`~albef.cli.main.AlbefError`."""
    from albef.reporting.schema import ReportError, RunReport

    try:
        return [RunReport.load(path) for path in paths]
    except ReportError as err:
        raise DataError(str(err)) from err


def default_out_dir(path: Path) -> Path:
    """``runs/x.json`` -> ``runs/x/`` (``runs/x`` without a suffix -> ``runs/x_report/``)."""
    return path.with_suffix("") if path.suffix else path.parent / f"{path.name}_report"


def _render(args: argparse.Namespace) -> int:
    from albef.reporting.render import render
    from albef.reporting.side_by_side import render_many, unique_labels

    reports = load_reports(args.runs)
    out = args.out or default_out_dir(args.runs[0])
    if len(reports) == 1:
        written = render(reports[0], out)
    else:
        written = render_many(reports, unique_labels(args.runs), out)
    for path in written:
        print(path)
    return 0


def _paper(args: argparse.Namespace) -> int:
    from albef.cli.main import AlbefError
    from albef.reporting.paper import PaperTableError, paper_comparison_many, paper_markdown
    from albef.reporting.side_by_side import unique_labels

    reports = load_reports(args.runs)
    try:
        comparison = paper_comparison_many(reports, unique_labels(args.runs), model=args.model)
    except (PaperTableError, ValueError) as err:
        raise AlbefError(str(err)) from err
    text = paper_markdown(comparison)
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from albef.reporting.compare import compare_reports, comparison_text
    from albef.reporting.schema import ReportError

    baseline, current = load_reports([args.baseline, args.current])
    try:
        result = compare_reports(
            baseline,
            current,
            metric_tol=args.metric_tol,
            speed_tol=None if args.no_speed else args.speed_tol,
            metric_tols=dict(args.tol),
            use_intervals=not args.no_intervals,
        )
    except ReportError as err:
        raise DataError(f"{args.baseline} vs {args.current}: {err}") from err
    print(f"baseline: {args.baseline}\ncurrent:  {args.current}\n")
    print(comparison_text(result), end="")
    return 1 if result.failed else 0


def _clip_benchmark(args: argparse.Namespace) -> int:
    from albef.fileio import atomic_write_json
    from albef.reporting.clip_benchmark import NotExportable, clip_benchmark_result

    written = 0
    for path, report in zip(args.runs, load_reports(args.runs), strict=True):
        try:
            result = clip_benchmark_result(report, args.model, args.pretrained)
        except NotExportable as err:
            print(f"skipped {path}: {err}", file=sys.stderr)
            continue
        print(atomic_write_json(args.out / f"{path.stem}.json", result))
        written += 1
    if not written:
        raise DataError("no report could be exported (retrieval, nlvr, ve, winoground, sugarcrepe, aro)")
    return 0
