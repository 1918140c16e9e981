"""``albef finetune vqa``, ``albef evaluate vqa`` and ``albef evaluate vqa-score``.

albef finetune vqa --config synthetic_vqa --checkpoint runs/synthetic_pretrain/checkpoints/step-00001000.pt
albef evaluate vqa --config synthetic_vqa --checkpoint runs/synthetic_vqa/checkpoints/step-00000780.pt
albef evaluate vqa-score --results R.json --questions Q.json --annotations A.json --out scores.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from albef.cli.config_cmd import add_config_arguments
from albef.cli.outputs import add_output_arguments, refuse_overwrite
from albef.cli.train import add_train_arguments, resolve_config
from albef.errors import CheckpointError, DataError

FINETUNE_DESCRIPTION = """\
Finetune VQA (spec §2.6) from a pretraining checkpoint (the answer decoder starts from its fusion layers) or
from a finetuned VQA checkpoint (loaded as is). The decoder is trained on '[CLS] answer [SEP]' with the
official answer weights (VQA: annotator share, VG: 0.5), the loss summed over tokens and divided by the number
of questions, with distillation from the momentum encoder/decoder. --inactive-distill reproduces the released
vqa.pth instead, whose distillation weight was 0 (spec §7 Q4). Validation each epoch only when data.val_file
is set. At the end the test split is answered: <output-dir>/vqa_result_test.json (evaluation-server format)
and, when the split has annotations, its official accuracy in <output-dir>/vqa_test_report.json.
"""

EVALUATE_DESCRIPTION = """\
Answer every question of a split by ranking the answer list (first-token top-k, then teacher-forced
re-scoring of the k candidates, chunked) and write the evaluation-server file
<output-dir>/vqa_result_<split>.json ([{"question_id", "answer"}], once per question; an incomplete set is
refused and its missing ids listed). When the split has annotations (--annotations, data.test_annotations,
or answers in the split file) it is scored with the official VQA accuracy. The run report
<output-dir>/vqa_<split>_report.json holds the metrics and the per-stage throughput.
"""

SCORE_DESCRIPTION = """\
Score a result file exactly as the official VQA evaluation (GT-Vision-Lab/VQA vqaEval.py): answer
normalisation, accuracy = mean over the leave-one-annotator-out subsets of min(1, matches/3), overall / per
question type / per answer type in percent, rounded to 2 decimals. Missing or extra question ids are errors.
Rounding (--rounding): python3 (default) breaks an exact tie to even, as the official code does when run
today under Python 3 (the copies ALBEF and LAVIS ship); python2 breaks it away from zero, as the original
Python 2 tool did (78.125 -> 78.12 and 78.13). The output names the rounding used.
"""


@dataclass
class EvalOptions:
    """Command-line choices of an evaluation run."""

    split: str
    k: int | None
    scoring: str
    chunk_size: int | None
    annotations: str | None
    questions: str | None
    rounding: str = "python3"


def _add_rounding_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounding",
        choices=("python3", "python2"),
        default="python3",
        help="how exact ties of the 2-decimal accuracy round: python3 (default, to even: the official code as "
        "run today) or python2 (away from zero: the original tool)",
    )


def _add_ranking_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, help="candidates re-scored per question (default: eval.k_test)")
    parser.add_argument(
        "--answer-scoring",
        choices=("official", "sequence"),
        default="official",
        help="official: log p(first token) + sequence log-likelihood (first token counted twice, reproduces "
        "the paper); sequence: the sequence log-likelihood alone (BLIP/LAVIS)",
    )
    parser.add_argument(
        "--rank-chunk-size",
        type=int,
        default=2048,
        help="(question, candidate) rows per decoder call (default: 2048)",
    )


def register_finetune(subparsers: Any) -> None:
    """Add ``albef finetune vqa``."""
    parser = subparsers.add_parser(
        "vqa",
        help="VQA answer generation (weighted answers, momentum distillation)",
        description=FINETUNE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(parser, "synthetic_vqa")
    parser.add_argument(
        "--inactive-distill",
        action="store_true",
        help="distillation weight 0 with the teachers still EMA-updated, as the released vqa.pth was trained "
        "(sets model.alpha=0)",
    )
    _add_ranking_arguments(parser)
    parser.add_argument("--no-test", action="store_true", help="skip answering the test split at the end")
    parser.set_defaults(handler=_finetune)


def register_evaluate(subparsers: Any) -> None:
    """Add ``albef evaluate vqa`` and ``albef evaluate vqa-score``."""
    parser = subparsers.add_parser(
        "vqa",
        help="answer a VQA split, write the server result file, score it when annotated",
        description=EVALUATE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser, default="synthetic_vqa")
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="VQA (or pretraining) checkpoint")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="default: test")
    parser.add_argument("--annotations", metavar="A.json", help="official VQA v2 annotations to score with")
    parser.add_argument("--questions", metavar="Q.json", help="the matching VQA v2 questions file (checked)")
    parser.add_argument(
        "--output-dir", help="where the result file and report go (default: runtime.output_dir)"
    )
    _add_ranking_arguments(parser)
    _add_rounding_argument(parser)
    add_output_arguments(parser)
    parser.set_defaults(handler=_evaluate)

    score = subparsers.add_parser(
        "vqa-score",
        help="score a VQA result file with the official accuracy",
        description=SCORE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("--results", required=True, metavar="R.json", help="[{question_id, answer}, ...]")
    score.add_argument("--questions", required=True, metavar="Q.json", help="VQA v2 questions file")
    score.add_argument("--annotations", required=True, metavar="A.json", help="VQA v2 annotations file")
    score.add_argument("--out", metavar="FILE", help="write {overall, perQuestionType, perAnswerType} here")
    _add_rounding_argument(score)
    score.set_defaults(handler=_score)


def _options(args: argparse.Namespace, split: str = "test") -> EvalOptions:
    return EvalOptions(
        split=getattr(args, "split", split),
        k=args.k,
        scoring=args.answer_scoring,
        chunk_size=args.rank_chunk_size,
        annotations=getattr(args, "annotations", None),
        questions=getattr(args, "questions", None),
        rounding=getattr(args, "rounding", "python3"),
    )


# -- handlers -----------------------------------------------------------------------------------------------
def _finetune(args: argparse.Namespace) -> int:
    from albef.cli.main import AlbefError
    from albef.workflows.finetune import finetune
    from albef.workflows.train import end_run

    if args.inactive_distill:
        args.overrides = [*args.overrides, "model.alpha=0.0"]
    cfg = resolve_config(args)
    if cfg.task != "vqa":
        raise AlbefError(f"config {args.config!r} is for task '{cfg.task}', not vqa")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise CheckpointError(f"--checkpoint {args.checkpoint}: no such file")
    try:
        done = finetune(
            cfg, checkpoint=args.checkpoint, resume=args.resume, show_progress=not args.no_progress
        )
        ctx = done.context
        summary = training_summary(Path(cfg.runtime.output_dir)) if ctx.world.is_main else {}
        if not args.no_test and cfg.data.test_file:
            extra = {"training": summary}
            evaluate_and_report(
                cfg, done.model, ctx.precision, ctx.world, _options(args), done.weights, extra
            )
    finally:
        end_run()
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from albef.cli.main import AlbefError
    from albef.workflows.evaluate import evaluation_model, prepare_evaluation

    cfg = resolve_config_for_eval(args)
    if not Path(args.checkpoint).is_file():
        raise CheckpointError(f"--checkpoint {args.checkpoint}: no such file")
    if args.questions and not args.annotations:
        raise AlbefError("--questions only checks --annotations; give both")
    out = Path(cfg.runtime.output_dir)
    refuse_overwrite(
        [out / f"vqa_result_{args.split}.json", out / f"vqa_{args.split}_report.json"], args.overwrite
    )
    world, precision = prepare_evaluation(cfg)
    model = evaluation_model(cfg, args.checkpoint, precision)
    evaluate_and_report(cfg, model, precision, world, _options(args), Path(args.checkpoint))
    return 0


def _score(args: argparse.Namespace) -> int:
    from albef.evaluation.vqa import read_result_file, read_vqa_annotations
    from albef.evaluation.vqa_eval import QuestionIdMismatchError, vqa_accuracy

    answers = read_result_file(args.results)
    truths = read_vqa_annotations(args.annotations, args.questions)
    try:
        accuracy = vqa_accuracy(answers, truths, args.rounding)
    except QuestionIdMismatchError as err:
        raise DataError(f"{args.results} does not match {args.annotations}: {err}") from None
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        record = {**accuracy.official_dict(), "rounding": accuracy.rounding}
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print_accuracy(accuracy.official_dict(), accuracy.untyped)
    print(
        f"rounding: {accuracy.rounding} (exact ties {'to even' if accuracy.rounding == 'python3' else 'away from zero'})"
    )
    return 0


# -- shared steps -------------------------------------------------------------------------------------------
def resolve_config_for_eval(args: argparse.Namespace) -> Any:
    """The config, with ``--output-dir`` folded in; it must be a VQA config."""
    from albef.cli.main import AlbefError
    from albef.config import load_config

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"runtime.output_dir={args.output_dir}")
    cfg = load_config(args.config, overrides)
    if cfg.task != "vqa":
        raise AlbefError(f"config {args.config!r} is for task '{cfg.task}', not vqa")
    return cfg


def evaluate_and_report(
    cfg: Any,
    model: Any,
    precision: Any,
    world: Any,
    options: EvalOptions,
    checkpoint: Path | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Answer ``options.split``, write the server file and the run report (rank 0), print the scores.

    ``extra`` goes into the report's ``extra`` (the training summary after finetuning); the synthetic world's
    majority-answer baseline is added when the split is its test split.
    """
    from albef.cli.main import AlbefError
    from albef.evaluation.vqa import ConflictingAnswersError, RankingOptions, write_result_file
    from albef.evaluation.vqa_eval import QuestionIdMismatchError
    from albef.reporting.environment import utc_now_iso
    from albef.tasks.data import build_tokenizer
    from albef.tasks.vqa import build_evaluator, vqa_split

    try:
        split = vqa_split(cfg, options.split, options.annotations, options.questions)
    except ValueError as err:  # a config without the split's file or answer list
        raise AlbefError(str(err)) from err
    ranking = RankingOptions(options.k or cfg.eval.k_test, options.scoring, options.chunk_size)  # type: ignore[arg-type]
    evaluator = build_evaluator(cfg, split, build_tokenizer(cfg.data), precision, ranking, world)
    evaluator.rounding = options.rounding  # type: ignore[assignment]
    start, tic = utc_now_iso(), time.perf_counter()
    try:
        result = evaluator.run(model)
    except (QuestionIdMismatchError, ConflictingAnswersError) as err:
        raise DataError(f"refusing to write an incomplete or inconsistent result file: {err}") from err
    if not world.is_main:
        return
    out = Path(cfg.runtime.output_dir)
    path = write_result_file(
        out / f"vqa_result_{split.name}.json", result.outputs["answers"], split.question_ids
    )
    result.extra["result_file"] = str(path)
    result.extra.update(extra or {})
    baseline = majority_baseline(cfg, split.name)
    if baseline is not None:
        result.extra["majority_baseline"] = baseline
    report = _report(result, cfg, split.name, checkpoint, precision, start, time.perf_counter() - tic)
    report_path = report.save(out / f"vqa_{split.name}_report.json")
    _render(report, out)
    print(f"result file: {path} ({result.n_samples} questions)")
    if "vqa_accuracy" in result.extra:
        print_accuracy(result.extra["vqa_accuracy"], result.extra.get("untyped_questions", 0), baseline)
    print_throughput(report)
    print(f"report: {report_path}")


def _report(
    result: Any, cfg: Any, split: str, checkpoint: Path | None, precision: Any, start: str, wall: float
) -> Any:
    from albef.workflows.reports import checkpoint_info, report_fields

    return result.to_report(
        split=split, checkpoint=checkpoint_info(checkpoint), **report_fields(cfg, precision, start, wall)
    )


def _render(report: Any, out: Path) -> None:
    """Markdown next to the JSON, when the renderer is available."""
    try:
        from albef.reporting.render import render  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    render(report, out)


# -- printing -----------------------------------------------------------------------------------------------
def majority_baseline(cfg: Any, split: str) -> dict[str, float] | None:
    """The synthetic world's majority-answer accuracy on its test split, in percent (``None`` elsewhere).

    ``overall``: always the most common training answer; per answer type: that type's most common answer
    (the world's ``manifest.json``, ``chance.vqa_test``).
    """
    from albef.tasks.data import data_path

    manifest = data_path(cfg.data, "manifest.json")
    if not cfg.data.synthetic_size or split != "test" or not manifest.is_file():
        return None
    chance = json.loads(manifest.read_text(encoding="utf-8")).get("chance", {}).get("vqa_test")
    if not chance:
        return None
    types = {k: 100 * v["accuracy"] for k, v in chance.items() if isinstance(v, dict)}
    return {"overall": 100 * chance["overall"], **types}


def print_accuracy(
    official: dict[str, Any], untyped: int = 0, baseline: dict[str, float] | None = None
) -> None:
    """Overall, per answer type and per question type, as a table (with the majority baseline if given)."""
    from tabulate import tabulate

    def base(name: str) -> str:
        return f"{baseline[name]:.2f}" if baseline and name in baseline else ""

    rows = [("overall", "", f"{official['overall']:.2f}", base("overall"))]
    rows += [("answer type", name, f"{v:.2f}", base(name)) for name, v in official["perAnswerType"].items()]
    rows += [
        ("question type", name, f"{v:.2f}", "") for name, v in sorted(official["perQuestionType"].items())
    ]
    headers = ["VQA accuracy", "", "%", "majority baseline %" if baseline else ""]
    print(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    if untyped:
        print(f"{untyped} question(s) have no question/answer type: counted in overall only", file=sys.stderr)


def print_throughput(report: Any) -> None:
    """One line per timed stage, plus the end-to-end questions/s."""
    for name, stage in report.stages.items():
        latency = stage.latency_batch
        print(
            f"{name}: {stage.items_per_s:.1f} {stage.item}s/s, batch p50 {latency.p50_ms:.1f} ms, "
            f"p95 {latency.p95_ms:.1f} ms ({stage.num_batches} batches)"
        )
    print(f"end to end: {report.extra['questions_per_s']:.1f} questions/s")


def training_summary(output_dir: Path) -> dict[str, Any]:
    """Write and print ``summary.json``: loss over the first and last tenth of the steps, validations."""
    from albef.cli.train import read_metrics, summarise
    from albef.workflows.train import write_summary

    records = read_metrics(output_dir / "metrics.jsonl")
    summary = summarise([r for r in records if "vqa_loss" in r])  # validation records have no loss
    validation = [r for r in records if "val/overall" in r]
    if validation:
        summary["validation"] = validation
    write_summary(output_dir / "summary.json", summary)
    if summary.get("steps"):
        first, last = summary["loss_first"]["vqa_loss"], summary["loss_last"]["vqa_loss"]
        speed = summary["samples_per_s"]
        print(f"steps: {summary['steps']}, vqa_loss {first:.4f} -> {last:.4f}, {speed:.1f} questions/s")
    return summary
