"""``albef finetune nlvr|ve``, ``albef evaluate nlvr|ve`` and ``albef evaluate nlvr-score``.

albef finetune nlvr --config synthetic_nlvr --checkpoint runs/synthetic_nlvr_pretrain/checkpoints/step-00000062.pt
albef evaluate nlvr --config runs/synthetic_nlvr/config.yaml --checkpoint runs/synthetic_nlvr/best.pt --split test
albef evaluate nlvr-score --predictions P.csv --labels nlvr2/data/dev.json
albef finetune ve --config synthetic_ve --checkpoint runs/synthetic_pretrain/checkpoints/step-00001260.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from albef.cli.classify_report import print_evaluation, print_training
from albef.cli.config_cmd import add_config_arguments
from albef.cli.outputs import add_output_arguments, refuse_overwrite
from albef.cli.train import add_train_arguments, resolve_config
from albef.errors import CheckpointError

FINETUNE_NLVR = """\
Finetune NLVR2 (spec §2.7) from a text-assignment checkpoint (albef pretrain-ta) or an NLVR2 checkpoint:
one ViT pass over both images, fusion layers alternating between them with shared key/value projections, an
MLP head on [CLS], distilled from the momentum model. Teachers absent from the checkpoint are copied from the
loaded weights; --parity-teacher keeps the official order instead (copied before loading, spec §7 Q14).
Each epoch is validated on data.val_file (accuracy, consistency); best.pt keeps the best accuracy, and the
test split is then evaluated with it: <output-dir>/nlvr_test_report.json and the predictions file
<output-dir>/nlvr_predictions_test.csv (identifier,True|False).
"""

FINETUNE_VE = """\
Finetune SNLI-VE (spec §2.8) from a pretraining or SNLI-VE checkpoint: a 3-way MLP head on the fused [CLS]
(0 contradiction, 1 neutral, 2 entailment), distilled from the momentum model with alpha from the first step.
Each epoch is validated on data.val_file; best.pt keeps the best accuracy and the test split is evaluated
with it: <output-dir>/ve_test_report.json (accuracy overall and per class).
"""

EVALUATE_NLVR = """\
Evaluate an NLVR2 checkpoint on the dev or test split of the config: accuracy and consistency (the share of
sentences all of whose image pairs are right, NLVR2's official metric). Splits are read in ALBEF's JSON or
lil-lab's JSON lines (*.jsonl). Writes <output-dir>/nlvr_<split>_report.json and the predictions file in
the official format (identifier,True|False); identifiers missing from ALBEF files are derived from the
lil-lab image names.
"""

SCORE_NLVR = """\
Score a predictions CSV exactly as lil-lab's nlvr2/eval/metrics.py: accuracy over the labelled examples,
consistency over their sentences. Every labelled identifier needs a prediction; the missing ones are listed.
"""

EVALUATE_VE = """\
Evaluate an SNLI-VE checkpoint on the dev or test split of the config: accuracy overall and per class.
Writes <output-dir>/ve_<split>_report.json.
"""


# -- registration -------------------------------------------------------------------------------------------
def register_finetune(subparsers: Any) -> None:
    """Add ``albef finetune nlvr`` and ``albef finetune ve``."""
    nlvr = subparsers.add_parser(
        "nlvr",
        help="NLVR2 two-image classification (validation: accuracy + consistency)",
        description=FINETUNE_NLVR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(nlvr, "synthetic_nlvr")
    nlvr.add_argument(
        "--parity-teacher",
        action="store_true",
        help="teachers keep their pre-load weights, as NLVR.py (copy_params before loading the checkpoint)",
    )
    nlvr.add_argument("--no-test", action="store_true", help="skip evaluating the test split at the end")
    nlvr.set_defaults(handler=_finetune, task_name="nlvr")
    ve = subparsers.add_parser(
        "ve",
        help="SNLI-VE entailment classification (validation: accuracy)",
        description=FINETUNE_VE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(ve, "synthetic_ve")
    ve.add_argument("--no-test", action="store_true", help="skip evaluating the test split at the end")
    ve.set_defaults(handler=_finetune, task_name="ve", parity_teacher=False)


def _add_evaluate_parser(
    subparsers: Any, task: str, description: str, help_text: str
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        task, help=help_text, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser, default=f"synthetic_{task}")
    parser.add_argument(
        "--checkpoint", required=True, metavar="PATH", help=f"{task} checkpoint (ours or official)"
    )
    parser.add_argument("--split", choices=("dev", "test"), default="dev", help="default: dev")
    parser.add_argument("--output-dir", help="where the report goes (default: runtime.output_dir)")
    add_output_arguments(parser)
    parser.set_defaults(handler=_evaluate, task_name=task)
    return parser


def register_evaluate(subparsers: Any) -> None:
    """Add ``albef evaluate nlvr``, ``albef evaluate nlvr-score`` and ``albef evaluate ve``."""
    nlvr = _add_evaluate_parser(
        subparsers, "nlvr", EVALUATE_NLVR, "NLVR2 accuracy + consistency, predictions CSV"
    )
    nlvr.add_argument(
        "--predictions",
        metavar="FILE",
        help="predictions CSV (default: <output-dir>/nlvr_predictions_<split>.csv)",
    )
    score = subparsers.add_parser(
        "nlvr-score",
        help="score an NLVR2 predictions CSV as the official script",
        description=SCORE_NLVR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("--predictions", required=True, metavar="P.csv", help="identifier,prediction lines")
    score.add_argument(
        "--labels", required=True, metavar="LABELS.jsonl", help="lil-lab JSON lines (dev/test1)"
    )
    score.add_argument("--out", metavar="FILE", help="also write {accuracy, consistency, ...} as JSON here")
    score.set_defaults(handler=_score)
    _add_evaluate_parser(subparsers, "ve", EVALUATE_VE, "SNLI-VE accuracy overall and per class")


# -- handlers -----------------------------------------------------------------------------------------------
def _finetune(args: argparse.Namespace) -> int:
    from albef.workflows.finetune import finetune
    from albef.workflows.train import end_run

    cfg = checked_config(resolve_config(args), args.task_name, args.config)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise CheckpointError(f"--checkpoint {args.checkpoint}: no such file")
    initial = None
    if args.parity_teacher and args.checkpoint:
        initial = str(parity_initial_weights(cfg, args.checkpoint))
    try:
        done = finetune(
            cfg,
            checkpoint=args.checkpoint,
            resume=args.resume,
            show_progress=not args.no_progress,
            initial=initial,
        )
        if done.report is not None:  # rank 0
            print_training(done.report)
            if not args.no_test and cfg.data.test_file:
                evaluate_and_report(cfg, done.model, done.context.precision, "test", done.weights)
    finally:
        end_run()
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from albef.config import load_config
    from albef.workflows.evaluate import evaluation_model, prepare_evaluation

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"runtime.output_dir={args.output_dir}")
    cfg = checked_config(load_config(args.config, overrides), args.task_name, args.config)
    if not Path(args.checkpoint).is_file():
        raise CheckpointError(f"--checkpoint {args.checkpoint}: no such file")
    out = Path(cfg.runtime.output_dir)
    outputs = [out / f"{cfg.task}_{args.split}_report.json"]
    if cfg.task == "nlvr":
        outputs.append(getattr(args, "predictions", None) or out / f"nlvr_predictions_{args.split}.csv")
    refuse_overwrite(outputs, args.overwrite)
    _, precision = prepare_evaluation(cfg)
    model = evaluation_model(cfg, args.checkpoint, precision)
    predictions = getattr(args, "predictions", None)
    evaluate_and_report(cfg, model, precision, args.split, Path(args.checkpoint), predictions)
    return 0


def _score(args: argparse.Namespace) -> int:
    import json

    from albef.errors import DataError
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
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dataclasses.asdict(score), indent=2) + "\n", encoding="utf-8")
    return 0


# -- shared steps -------------------------------------------------------------------------------------------
def checked_config(cfg: Any, task: str, name: str | None) -> Any:
    """``cfg`` if it is a ``task`` config; else an :class:`~albef.cli.main.AlbefError`."""
    from albef.cli.main import AlbefError

    if cfg.task != task:
        raise AlbefError(f"config {name!r} is for task '{cfg.task}', not {task}")
    return cfg


def parity_initial_weights(cfg: Any, checkpoint: str) -> Path:
    """The official NLVR.py start: ``checkpoint`` loaded after ``copy_params``, teachers kept, saved whole.

    The model is built after seeding with ``runtime.seed``, as :func:`albef.workflows.train.train` builds it, so
    the teachers hold the same pre-load weights the run would have had.
    """
    from albef.checkpoint import load_checkpoint
    from albef.fileio import atomic_torch_save
    from albef.models.builders import create_model
    from albef.workflows.train import seed_everything

    seed_everything(cfg.runtime.seed)
    model = create_model(cfg.task, cfg.model)
    load_checkpoint(model, cfg.task, checkpoint, parity=True)
    return atomic_torch_save({"model": model.state_dict()}, Path(cfg.runtime.output_dir) / "parity_init.pt")


def evaluate_and_report(
    cfg: Any,
    model: Any,
    precision: Any,
    split: str,
    checkpoint: Path | None,
    predictions: str | None = None,
) -> Any:
    """Evaluate ``split``, write the run report (and for NLVR2 the predictions CSV), print the metrics."""
    from albef.cli.main import AlbefError
    from albef.evaluation.nlvr_eval import write_predictions
    from albef.reporting.environment import utc_now_iso
    from albef.tasks import get_task
    from albef.tasks.data import build_tokenizer
    from albef.workflows.reports import checkpoint_info, report_fields, save_report

    task = get_task(cfg.task)(cfg, build_tokenizer(cfg.data))
    try:
        evaluator = task.evaluator(split, precision)
    except ValueError as err:  # the config names no file for the split
        raise AlbefError(str(err)) from err
    start, tic = utc_now_iso(), time.perf_counter()
    result = evaluator.run(model)
    wall = time.perf_counter() - tic
    out = Path(cfg.runtime.output_dir)
    if cfg.task == "nlvr":
        kept = [i for i, ok in enumerate(result.outputs["evaluated"]) if ok]
        path = write_predictions(
            predictions or out / f"nlvr_predictions_{split}.csv",
            [result.outputs["identifiers"][i] for i in kept],
            [result.outputs["predictions"][i] for i in kept],
        )
        result.extra["predictions_file"] = str(path)
    result.extra["examples_per_s"] = result.n_samples / wall if wall > 0 else 0.0
    report = result.to_report(
        split=split, checkpoint=checkpoint_info(checkpoint), **report_fields(cfg, precision, start, wall)
    )
    path = save_report(report, out, f"{cfg.task}_{split}_report.json")
    print_evaluation(report)
    print(f"report: {path}")
    return report
