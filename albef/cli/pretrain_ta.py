"""``albef pretrain-ta``: text-assignment pretraining for NLVR², single process or under ``torchrun``.

albef pretrain-ta --config synthetic_nlvr_pretrain --checkpoint runs/synthetic_pretrain/checkpoints/step-00001260.pt
albef pretrain-ta --config nlvr_pretrain --checkpoint ALBEF_4M.pth --set data.root=/data/albef
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from albef.cli.train import add_train_arguments, resolve_config

DESCRIPTION = """\
Text-assignment (TA) pretraining, the step between pretraining and NLVR2 finetuning (spec §2.7): each caption
is shown with two images of its batch (partners drawn by image-image similarity; never the caption's own
image twice) and a 3-way head says whether it describes the first, the second or neither. The encoder has
every fusion layer doubled (18 layers for BERT-base), the two layers of a pair sharing the cross-attention
key/value projections; a pretraining checkpoint is converted so (fusion layer N -> layers 2N-6 and 2N-5).
Writes checkpoints, metrics.jsonl and <output-dir>/nlvr_pretrain_train_report.json; the last checkpoint
is what 'albef finetune nlvr --checkpoint' takes.
"""


def register(subparsers: Any) -> None:
    """Add the ``pretrain-ta`` command."""
    parser = subparsers.add_parser(
        "pretrain-ta",
        help="text-assignment pretraining for NLVR2 (two-image encoder, 3-way head)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(parser, "synthetic_nlvr_pretrain")
    parser.set_defaults(handler=_pretrain_ta)


def _pretrain_ta(args: argparse.Namespace) -> int:
    from albef.workflows.evaluate import build_task
    from albef.workflows.finetune import finetune_task

    cfg = resolve_config(args)
    build_task(cfg, "nlvr_pretrain")  # refuses another task's config before any work
    done = finetune_task(
        cfg, checkpoint=args.checkpoint, resume=args.resume, show_progress=not args.no_progress, test=False
    )
    if done.report is not None:  # rank 0
        print(f"checkpoint: {done.result.checkpoint}")
        print(f"report: {Path(cfg.runtime.output_dir) / 'nlvr_pretrain_train_report.json'}")
    return 0
