"""``albef pretrain``: ITC + ITM + MLM pretraining, single process or under ``torchrun``.

albef pretrain --config synthetic_pretrain --max-steps 200
torchrun --nproc_per_node=2 -m albef pretrain --config pretrain --set data.root=/data/albef
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from albef.cli.config_cmd import add_config_arguments
from albef.engine.metrics_log import read_metrics

DESCRIPTION = """\
Pretrain ALBEF: image-text contrastive loss with momentum distillation and feature queues, image-text
matching with hard negatives, and masked language modelling with distillation. Defaults to the embedded
synthetic world (generated on first use). Checkpoints (atomic, every runtime.checkpoint_every steps and at
epoch end) go to <output-dir>/checkpoints; --resume auto continues exactly where a run stopped.
Metrics go to <output-dir>/metrics.jsonl. If data.test_file names a retrieval split, the pretrained model
is evaluated zero-shot on it by ITC ranking at the end.
"""


def add_train_arguments(parser: argparse.ArgumentParser, default_config: str) -> None:
    """Arguments shared by the training commands."""
    add_config_arguments(parser, default=default_config)
    parser.add_argument("--output-dir", help="run directory (default: the config's runtime.output_dir)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue from the newest checkpoint of the run (auto) or a file",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="initialise from a checkpoint (official ALBEF or ours; converted)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: Any) -> None:
    """Add the ``pretrain`` command."""
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain with ITC + ITM + MLM (single process or torchrun)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(parser, "synthetic_pretrain")
    parser.set_defaults(handler=_pretrain)


def resolve_config(args: argparse.Namespace) -> Any:
    """The config with the command-line shortcuts folded in as overrides."""
    from albef.config import load_config

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"runtime.output_dir={args.output_dir}")
    if args.max_steps is not None:
        overrides.append(f"optim.max_steps={args.max_steps}")
    return load_config(args.config, overrides)


def _pretrain(args: argparse.Namespace) -> int:
    from albef.cli.main import AlbefError
    from albef.workflows.train import end_run, summarise, train, write_summary

    cfg = resolve_config(args)
    if cfg.task != "pretrain":
        raise AlbefError(f"config {args.config!r} is for task '{cfg.task}', not pretrain")
    try:
        result, model, ctx = train(
            cfg, resume=args.resume, checkpoint=args.checkpoint, show_progress=not args.no_progress
        )
        if ctx.world.is_main:
            # The whole log, so that a resumed run summarises every step, not only those since the resume.
            summary = summarise(read_metrics(Path(cfg.runtime.output_dir) / "metrics.jsonl"))
            if cfg.data.test_file:
                summary["zero_shot_itc"], summary["zero_shot_itc_intervals"] = zero_shot_itc(
                    cfg, model, ctx.precision
                )
            summary["checkpoint"] = str(result.checkpoint) if result.checkpoint else None
            summary["skipped_images"] = result.skipped_files
            write_summary(Path(cfg.runtime.output_dir) / "summary.json", summary)
            print_summary(summary)
    finally:
        end_run()
    return 0


def zero_shot_itc(cfg: Any, model: Any, precision: Any) -> tuple[dict[str, float], dict[str, list[Any]]]:
    """ITC-only retrieval metrics on ``data.test_file``, and the recalls' ``[low, high, n]`` bootstrap
    intervals (images resampled with their captions)."""
    from albef.data.formats import read_retrieval_eval
    from albef.evaluation.encode import encode_split
    from albef.evaluation.metrics import retrieval_metric_objects
    from albef.evaluation.similarity import itc_similarity
    from albef.tasks.data import build_tokenizer, data_path

    path = data_path(cfg.data, cfg.data.test_file)
    split = read_retrieval_eval(path)
    features = encode_split(
        model,
        split,
        data_path(cfg.data, cfg.data.image_root),
        build_tokenizer(cfg.data),
        precision,
        cfg.model.vision.image_res,
        batch_size=cfg.data.batch_size_test,
        keep_tokens=False,
        max_length=cfg.data.max_tokens_eval or 30,
        max_words=cfg.data.max_words,
        source=str(path),
    )
    sims = itc_similarity(features)
    metrics = retrieval_metric_objects(sims, sims.T, split)
    intervals = {
        name: [m.ci_low, m.ci_high, m.n]
        for name, m in metrics.items()
        if m.ci_low is not None and m.ci_high is not None
    }
    return {name: m.value for name, m in metrics.items()}, intervals


def print_summary(summary: dict[str, Any]) -> None:
    """A short human-readable table of the run."""
    from tabulate import tabulate

    if not summary.get("steps"):
        print("no optimizer step was taken", file=sys.stderr)
        return
    rows = [
        (k, f"{summary['loss_first'][k]:.4f}", f"{summary['loss_last'][k]:.4f}")
        for k in summary["loss_first"]
    ]
    print(tabulate(rows, headers=["loss", "first 10% of steps", "last 10% of steps"], tablefmt="simple"))
    print(f"steps: {summary['steps']}, samples/s: {summary['samples_per_s']:.1f}")
    if "zero_shot_itc" in summary:
        metrics = summary["zero_shot_itc"]
        keys = ["txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "r_mean"]
        print(tabulate([[f"{metrics[k]:.2f}" for k in keys]], headers=keys, tablefmt="simple"))
