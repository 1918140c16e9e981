"""``albef finetune retrieval`` and ``albef evaluate retrieval``.

albef finetune retrieval --config synthetic_retrieval --checkpoint runs/synthetic_pretrain/checkpoints/last.pt
albef evaluate retrieval --config retrieval_coco --checkpoint coco_finetuned.pth --set data.root=/data
albef evaluate retrieval --config retrieval_flickr --checkpoint coco_finetuned.pth   # zero-shot Flickr30K
torchrun --nproc_per_node=2 -m albef evaluate retrieval --config retrieval_coco --checkpoint ckpt.pth
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from albef.cli.outputs import add_output_arguments, refuse_overwrite
from albef.errors import CheckpointError

FINETUNE_DESCRIPTION = """\
Finetune on image-text retrieval (official Retrieval.py): ITC with every caption of an image as a positive
over the batch and the queue (idx queue), momentum distillation, and ITM with hard negatives that exclude
same-image samples. Start from a pretraining checkpoint (converted) or a finetuned one. After each epoch
the val split is evaluated with the official protocol; best.pt keeps the best val r_mean, and the test split
is evaluated with it at the end. Reports (JSON + Markdown) go to <output-dir>/reports.
"""

EVALUATE_DESCRIPTION = """\
Evaluate a checkpoint on a retrieval split with the official protocol: ITC similarity, then the top k
candidates of every image and every text re-ranked by the ITM head (cells outside the top k = -100), batched
over many queries per fusion call. Prints and writes the official metrics (txt_r1 ... r_mean), mean/median
ranks and per-stage throughput (image/text encoding, ITC, re-rank pairs/s) and latency. Any checkpoint can
be evaluated on any dataset's split (zero-shot: e.g. the COCO-finetuned model with --config retrieval_flickr).
"""


def register_finetune(subparsers: Any) -> None:
    """Add ``albef finetune retrieval``."""
    from albef.cli.train import add_train_arguments

    parser = subparsers.add_parser(
        "retrieval",
        help="image-text retrieval (COCO, Flickr30K, synthetic)",
        description=FINETUNE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(parser, "synthetic_retrieval")
    parser.add_argument("--no-test", action="store_true", help="skip the final test-split evaluation")
    parser.set_defaults(handler=_finetune)


def register_evaluate(subparsers: Any) -> None:
    """Add ``albef evaluate retrieval``."""
    from albef.cli.config_cmd import add_config_arguments

    parser = subparsers.add_parser(
        "retrieval",
        help="image-text retrieval: ITC + ITM re-rank of the top k, official metrics, throughput",
        description=EVALUATE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser, default="synthetic_retrieval")
    parser.add_argument("--checkpoint", required=True, help="weights to evaluate (official ALBEF or ours)")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="which split of the config")
    parser.add_argument(
        "--annotations", help="evaluate this split file instead (ALBEF, MacCap or COCO layout)"
    )
    parser.add_argument(
        "--image-root", help="root of the split's images (default: the config's data.image_root)"
    )
    parser.add_argument("--k", type=int, help="candidates re-ranked per query (default: eval.k_test)")
    parser.add_argument(
        "--itc-only", action="store_true", help="rank by the ITC similarity only (no re-rank)"
    )
    parser.add_argument(
        "--score",
        choices=("itm", "itm+itc"),
        default="itm",
        help="re-rank score: the ITM match logit (official) or logit + ITC similarity (LAVIS)",
    )
    parser.add_argument(
        "--feature-dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="storage of image tokens"
    )
    parser.add_argument("--budget-mb", type=float, help="memory budget of one fusion call in MiB")
    parser.add_argument("--cache-dir", help="cache the encoded features here, keyed by checkpoint and data")
    parser.add_argument("--out", help="report directory (default: <runtime.output_dir>/eval)")
    parser.add_argument("--save-scores", action="store_true", help="also save the two score matrices (.pt)")
    add_output_arguments(parser)
    parser.set_defaults(handler=_evaluate)


# -- finetune ---------------------------------------------------------------------------------------------------
def _finetune(args: argparse.Namespace) -> int:
    from albef.checkpoint import CheckpointFormatError, CheckpointMismatchError
    from albef.cli.main import AlbefError
    from albef.cli.train import read_metrics, resolve_config, summarise
    from albef.tasks.retrieval import evaluate_split
    from albef.workflows.finetune import finetune
    from albef.workflows.train import end_run, write_summary

    cfg = resolve_config(args)
    if cfg.task != "retrieval":
        raise AlbefError(f"config {args.config!r} is for task '{cfg.task}', not retrieval")
    _check_file(args.checkpoint, "--checkpoint")
    try:
        started, start_time = time.perf_counter(), _now()
        done = finetune(
            cfg, checkpoint=args.checkpoint, resume=args.resume, show_progress=not args.no_progress
        )
        result, ctx = done.result, done.context
        test = None
        if cfg.data.test_file and not args.no_test:  # the best validation epoch (else the final weights)
            test = evaluate_split(cfg, done.model, cfg.data.test_file)
        if ctx.world.is_main:
            out = Path(cfg.runtime.output_dir)
            steps = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]  # not the val/ records
            summary = summarise(steps)
            summary.update(validation=result.validation, best_epoch=result.state.best_epoch)
            summary["best_checkpoint"] = str(result.best_checkpoint) if result.best_checkpoint else None
            if test is not None:
                fields = _report_fields(
                    cfg, "test", result.best_checkpoint, ctx.precision, start_time, started
                )
                paths = _write(
                    test.to_report(**fields), out / "reports", f"retrieval-{fields['dataset']}-test"
                )
                summary["test"] = test.values()
                summary["test_report"] = str(paths[0])
                _print_metrics(test.values(), "test (best val r_mean)")
            write_summary(out / "summary.json", summary)
    except (CheckpointMismatchError, CheckpointFormatError, FileNotFoundError) as err:
        raise CheckpointError(str(err)) from err
    finally:
        end_run()
    return 0


# -- evaluate ---------------------------------------------------------------------------------------------------
def _evaluate(args: argparse.Namespace) -> int:
    from albef.checkpoint import CheckpointFormatError, CheckpointMismatchError
    from albef.workflows.train import end_run

    _check_file(args.checkpoint, "--checkpoint")
    try:
        return _run_evaluation(args)
    except (CheckpointMismatchError, CheckpointFormatError, FileNotFoundError) as err:
        raise CheckpointError(str(err)) from err
    finally:
        end_run()


def _run_evaluation(args: argparse.Namespace) -> int:
    from albef.config import load_config
    from albef.evaluation.retrieval import RetrievalEvaluator, read_eval_split
    from albef.tasks.data import build_tokenizer, data_path
    from albef.workflows.evaluate import evaluation_model, prepare_evaluation

    started, start_time = time.perf_counter(), _now()
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path(cfg.runtime.output_dir) / "eval"
    stem = f"retrieval-{dataset_name(cfg)}-{args.split}"
    refuse_overwrite([out / f"{stem}.json", out / f"{stem}.md"], args.overwrite)
    world, precision = prepare_evaluation(cfg)
    split_file = args.annotations or _split_file(cfg, args.split)
    split = read_eval_split(data_path(cfg.data, split_file))
    image_root = Path(args.image_root) if args.image_root else data_path(cfg.data, cfg.data.image_root)
    model = evaluation_model(cfg, args.checkpoint, precision, task="retrieval")
    settings = _settings(cfg, args)
    tokenizer = build_tokenizer(cfg.data)
    cache, key = _cache(args, cfg, split, image_root, settings, tokenizer)
    evaluator = RetrievalEvaluator(
        split,
        image_root,
        tokenizer,
        precision,
        settings,
        world=world,
        cache=cache,
        cache_key=key,
        source=split_file,
    )
    result = evaluator.run(model)
    if world.is_main:
        fields = _report_fields(cfg, args.split, args.checkpoint, precision, start_time, started)
        paths = _write(result.to_report(**fields), out, stem)
        if args.save_scores:
            import torch

            scores = {k: result.outputs[k] for k in ("scores_i2t", "scores_t2i")}
            torch.save(scores, out / f"{stem}-scores.pt")
        _print_metrics(result.values(), f"{fields['dataset']} {args.split}")
        print(f"report: {paths[0]} and {paths[1].name}")
    return 0


def _check_file(path: str | None, flag: str) -> None:
    """An ``AlbefError`` naming ``flag`` when ``path`` is given but is not a file."""

    if path is not None and not Path(path).is_file():
        raise CheckpointError(f"{flag} {path}: no such checkpoint file")


def _split_file(cfg: Any, split: str) -> str:
    from albef.cli.main import AlbefError

    name = cfg.data.test_file if split == "test" else cfg.data.val_file
    if not name:
        raise AlbefError(f"config has no data.{split}_file; give --annotations FILE")
    return str(name)


def _settings(cfg: Any, args: argparse.Namespace) -> Any:
    from albef.evaluation.retrieval import settings_from_config

    overrides: dict[str, Any] = {
        "score": args.score,
        "itc_only": args.itc_only,
        "feature_dtype": args.feature_dtype,
    }
    if args.k is not None:
        overrides["k"] = args.k
    if args.budget_mb is not None:
        overrides["budget_mb"] = args.budget_mb
    try:
        return settings_from_config(cfg, **overrides)
    except ValueError as err:
        from albef.cli.main import AlbefError

        raise AlbefError(str(err)) from err


def _cache(
    args: argparse.Namespace, cfg: Any, split: Any, image_root: Path, settings: Any, tokenizer: Any
) -> Any:
    """The feature cache and this evaluation's key, or ``(None, None)`` without ``--cache-dir``."""
    if not args.cache_dir:
        return None, None
    from albef.config import to_dict
    from albef.evaluation.feature_cache import FeatureCache, cache_key, data_fingerprint
    from albef.reporting.environment import file_sha256

    encoding = {**settings.encoding(), "tokenizer": cfg.data.tokenizer, "vocab": tokenizer.vocab_size}
    encoding["precision"] = cfg.runtime.precision
    key = cache_key(
        file_sha256(args.checkpoint), to_dict(cfg.model), data_fingerprint(split, image_root), encoding
    )
    return FeatureCache(args.cache_dir), key


# -- reports ----------------------------------------------------------------------------------------------------
def _now() -> str:
    from albef.reporting.environment import utc_now_iso

    return utc_now_iso()


def dataset_name(cfg: Any) -> str:
    """The report's dataset: ``synthetic``, ``coco``/``flickr30k`` for their presets, else the config name."""
    from albef.workflows.reports import dataset_name as report_dataset

    return report_dataset(cfg, "retrieval")


def _report_fields(
    cfg: Any, split: str, checkpoint: str | Path | None, precision: Any, start: str, started: float
) -> dict[str, Any]:
    """The :class:`RunReport` fields besides the measurements."""
    from albef.workflows.reports import checkpoint_info, report_fields

    wall = time.perf_counter() - started
    fields = report_fields(cfg, precision, start, wall, task="retrieval")
    return {"split": split, "checkpoint": checkpoint_info(checkpoint), **fields}


def _write(report: Any, out: Path, stem: str) -> tuple[Path, Path]:
    """``<out>/<stem>.json`` and ``<out>/<stem>.md``, plus the rendered tables and plots (``report.md``,
    ``metrics.csv``, ``stages.csv``, recall@k, throughput and latency)."""
    from albef.reporting.render import render

    json_path = report.save(out / f"{stem}.json")
    md_path = out / f"{stem}.md"
    md_path.write_text(report_markdown(report), encoding="utf-8")
    render(report, out)
    return json_path, md_path


def _print_metrics(values: dict[str, float], title: str) -> None:
    from tabulate import tabulate

    keys = ["txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "r_mean"]
    print(title)
    print(tabulate([[f"{values[k]:.2f}" for k in keys]], headers=keys, tablefmt="simple"))


def report_markdown(report: Any) -> str:
    """A retrieval run report as Markdown: metrics (with chance level), stage throughput, settings."""
    lines = [f"# Retrieval: {report.dataset} {report.split} ({report.model_preset})", ""]
    chance = report.extra.get("chance", {})
    lines += ["| metric | value (± 95% CI half-width) | n | chance |", "|---|---|---|---|"]
    for name, metric in report.metrics.items():
        unit = "%" if metric.unit == "%" else ""
        base = f"{chance[name]:.2f}{unit}" if name in chance else ""
        n = "" if metric.n is None else str(metric.n)
        lines.append(f"| {name} | {metric.formatted(2)}{unit} | {n} | {base} |")
    lines += ["", "| stage | items/s | item | calls | p50 ms | p95 ms |", "|---|---|---|---|---|---|"]
    for key, stage in report.stages.items():
        lat = stage.latency_batch
        lines.append(
            f"| {key} | {stage.items_per_s:,.1f} | {stage.item} | {stage.num_batches} | {lat.p50_ms:.2f} | {lat.p95_ms:.2f} |"
        )
    keys = (
        "k",
        "score",
        "itc_only",
        "ties",
        "pairs_requested",
        "pairs_scored",
        "fusion_calls",
        "cache",
        "world_size",
    )
    settings = ", ".join(f"{k}={report.extra[k]}" for k in keys if k in report.extra)
    env = report.environment
    memory = f"{report.memory.mib:,.0f} MiB ({report.memory.kind})" if report.memory else "n/a"
    lines += ["", f"Settings: {settings}.", f"Peak memory: {memory}.", f"Device: {env.device_name} ({env.device}), "
              f"precision {env.precision}, torch {env.torch}, git {env.git}."]  # fmt: skip
    checkpoint = report.checkpoint
    if checkpoint is not None:
        lines.append(f"Checkpoint: `{checkpoint.path}` (sha256 {str(checkpoint.sha256)[:16]}).")
    return "\n".join(lines) + "\n"
