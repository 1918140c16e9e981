"""``albef reproduce``: the evaluations behind each paper table, with the official protocol, vs the paper.

albef reproduce retrieval-coco --checkpoint coco_finetuned.pth --data-root /data
albef reproduce zeroshot-flickr --checkpoint coco_finetuned.pth --data-root /data --model "ALBEF 14M"
albef reproduce all --checkpoints retrieval-coco=coco.pth retrieval-flickr=flickr.pth vqa=vqa.pth \\
    nlvr=nlvr.pth ve=ve.pth --data-root /data
albef reproduce vqa --checkpoint vqa.pth --data-root /data --dry-run

Each target runs the evaluations of ``albef evaluate`` on the official presets, stamps their reports with the
paper's naming and writes ``<out>/paper.md`` (:mod:`albef.workflows.reproduce`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Run the evaluations behind each ALBEF paper table with the official protocol and compare with the paper:

  retrieval-coco    COCO 5K test, 384 px, ITC then ITM re-rank of the top k=256   (fine-tuned table)
  retrieval-flickr  Flickr30K 1K test, 384 px, k=128                              (fine-tuned table)
  zeroshot-flickr   the COCO-fine-tuned checkpoint on Flickr30K 1K test, k=128    (zero-shot table)
  vqa               test split -> evaluation-server file (scored as test-dev on the server), val scored
                    locally (data/vqa_val.json carries the annotators' answers; not a paper cell)
  nlvr              NLVR2 dev and test-P accuracy (+ consistency, predictions CSV)
  ve                SNLI-VE val (data/ve_dev.json) and test accuracy
  grounding         RefCOCO+ val and test (testA, testB): ITM Grad-CAM of fusion layer 8 ranks the
                    detector's proposals, accuracy at IoU >= 0.5 (compared with ALBEF 14M by default)
  all               every target above (--checkpoints target=PATH ...)

Reports go to <out>/<target>/, the comparison to <out>/paper.md. Paths in the presets are relative to
--data-root (official ALBEF layout: data/*.json, coco/images, flickr30k, nlvr2, snli-ve/images).
"""


DEFAULT_MODEL = "ALBEF 4M"
GROUNDING_MODEL = "ALBEF 14M"
"""The paper reports RefCOCO+ for the 14M model only (salesforce/ALBEF#73), the base of ``refcoco.pth``."""


def register(subparsers: Any) -> None:
    """Add ``albef reproduce``."""
    from albef.workflows.reproduce import TARGETS

    parser = subparsers.add_parser(
        "reproduce",
        help="run the evaluations behind each paper table (official protocol) and compare with the paper",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", choices=(*TARGETS, "all"), help="which paper table(s) to reproduce")
    parser.add_argument("--checkpoint", metavar="PATH", help="the target's fine-tuned checkpoint")
    parser.add_argument(
        "--checkpoints",
        nargs="+",
        default=[],
        metavar="TARGET=PATH",
        help="per-target checkpoints (for 'all'; zeroshot-flickr defaults to retrieval-coco's)",
    )
    parser.add_argument("--data-root", required=True, metavar="DIR", help="root of the official data layout")
    parser.add_argument("--out", default="reports/reproduce", help="output directory (default: %(default)s)")
    parser.add_argument(
        "--model",
        default=None,
        help=f"paper column to compare with (default: {DEFAULT_MODEL}; {GROUNDING_MODEL} for grounding, "
        "the only model the paper grounds)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed to every evaluation (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.set_defaults(handler=_reproduce)


def _reproduce(args: argparse.Namespace) -> int:
    from albef.workflows.reproduce import checkpoints_of, reproduce
    from albef.workflows.train import end_run

    checkpoints = checkpoints_of(args.target, args.checkpoint, args.checkpoints)
    out = Path(args.out)
    model = args.model or (GROUNDING_MODEL if args.target == "grounding" else DEFAULT_MODEL)
    try:
        text = reproduce(checkpoints, args.data_root, out, model, args.overrides, args.dry_run)
    finally:
        end_run()
    if text is not None:
        print(text)
        print(f"comparison: {out / 'paper.md'}")
    return 0
