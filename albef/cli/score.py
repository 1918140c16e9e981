"""``albef evaluate vqa-score`` and ``albef evaluate nlvr-score``: score a result file offline, exactly as the
official tools do (no model, no images).

albef evaluate vqa-score --results R.json --questions Q.json --annotations A.json --out scores.json
albef evaluate nlvr-score --predictions P.csv --labels nlvr2/data/dev.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from albef.cli.task_options import described_parser
from albef.errors import DataError

VQA_SCORE = """\
Score a result file exactly as the official VQA evaluation (GT-Vision-Lab/VQA vqaEval.py): answer
normalisation, accuracy = mean over the leave-one-annotator-out subsets of min(1, matches/3), overall / per
question type / per answer type in percent, rounded to 2 decimals. Missing or extra question ids are errors.
Rounding (--rounding): python3 (default) breaks an exact tie to even, as the official code does when run
today under Python 3 (the copies ALBEF and LAVIS ship); python2 breaks it away from zero, as the original
Python 2 tool did (78.125 -> 78.12 and 78.13). The output names the rounding used.
"""

NLVR_SCORE = """\
Score a predictions CSV exactly as lil-lab's nlvr2/eval/metrics.py: accuracy over the labelled examples,
consistency over their sentences. Every labelled identifier needs a prediction; the missing ones are listed.
"""


def register(subparsers: Any) -> None:
    """Add ``vqa-score`` and ``nlvr-score`` to the ``albef evaluate`` subcommands."""
    vqa = described_parser(
        subparsers, "vqa-score", "score a VQA result file with the official accuracy", VQA_SCORE
    )
    vqa.add_argument("--results", required=True, metavar="R.json", help="[{question_id, answer}, ...]")
    vqa.add_argument("--questions", required=True, metavar="Q.json", help="VQA v2 questions file")
    vqa.add_argument("--annotations", required=True, metavar="A.json", help="VQA v2 annotations file")
    vqa.add_argument("--out", metavar="FILE", help="write {overall, perQuestionType, perAnswerType} here")
    vqa.add_argument(
        "--rounding",
        choices=("python3", "python2"),
        default="python3",
        help="how exact ties of the 2-decimal accuracy round: python3 (default, to even: the official code as "
        "run today) or python2 (away from zero: the original tool)",
    )
    vqa.set_defaults(handler=_vqa_score)
    nlvr = described_parser(
        subparsers, "nlvr-score", "score an NLVR2 predictions CSV as the official script", NLVR_SCORE
    )
    nlvr.add_argument("--predictions", required=True, metavar="P.csv", help="identifier,prediction lines")
    nlvr.add_argument(
        "--labels", required=True, metavar="LABELS.jsonl", help="lil-lab JSON lines (dev/test1)"
    )
    nlvr.add_argument("--out", metavar="FILE", help="also write {accuracy, consistency, ...} as JSON here")
    nlvr.set_defaults(handler=_nlvr_score)


def _write_json(path: str, payload: dict[str, Any]) -> None:
    from albef.fileio import atomic_write_json

    atomic_write_json(Path(path), payload)


def _vqa_score(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from albef.evaluation.vqa_eval import QuestionIdMismatchError, vqa_accuracy
    from albef.evaluation.vqa_files import read_result_file, read_vqa_annotations

    answers = read_result_file(args.results)
    truths = read_vqa_annotations(args.annotations, args.questions)
    try:
        accuracy = vqa_accuracy(answers, truths, args.rounding)
    except QuestionIdMismatchError as err:
        raise DataError(f"{args.results} does not match {args.annotations}: {err}") from None
    official = accuracy.official_dict()
    if args.out:
        _write_json(args.out, {**official, "rounding": accuracy.rounding})
    rows = [("overall", "", f"{official['overall']:.2f}")]
    rows += [("answer type", name, f"{v:.2f}") for name, v in official["perAnswerType"].items()]
    rows += [("question type", name, f"{v:.2f}") for name, v in sorted(official["perQuestionType"].items())]
    print(tabulate(rows, headers=["VQA accuracy", "", "%"], tablefmt="simple", disable_numparse=True))
    if accuracy.untyped:
        print(
            f"{accuracy.untyped} question(s) have no question/answer type: counted in overall only",
            file=sys.stderr,
        )
    ties = "to even" if accuracy.rounding == "python3" else "away from zero"
    print(f"rounding: {accuracy.rounding} (exact ties {ties})")
    return 0


def _nlvr_score(args: argparse.Namespace) -> int:
    from albef.evaluation.nlvr_eval import (
        MissingPredictionsError,
        read_labels,
        read_predictions,
        score_predictions,
    )

    labels = read_labels(args.labels)  # a malformed file is a DataError naming the line
    try:
        predictions = read_predictions(args.predictions)
    except ValueError as err:  # unreadable or malformed (the message names the file and line)
        raise DataError(str(err)) from err
    try:
        score = score_predictions(predictions, labels)
    except MissingPredictionsError as err:
        raise DataError(f"{args.predictions} does not cover {args.labels}: {err}") from err
    except DataError as err:
        raise DataError(f"{args.labels}: {err}") from err
    print(f"accuracy={score.accuracy}")
    print(f"consistency={score.consistency}")
    if args.out:
        _write_json(args.out, dataclasses.asdict(score))
    return 0
