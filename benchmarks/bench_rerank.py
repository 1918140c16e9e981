"""Batched ITM re-ranking against the official one-query-at-a-time loop, on the same features and model.

For each preset a retrieval model with random weights (eval mode, float32) encodes ``--images`` random
images at the preset's resolution and ``--captions`` texts per image. Text lengths follow the real COCO
Karpathy test captions (``1 + words`` after ``pre_caption``, a lower bound of their BERT WordPiece count,
read from ``../shared/data/real`` when present; ``--lengths full`` pads every text to 30 real tokens, the worst
case for us). The ITC similarity picks each query's top ``--k`` candidates, then both re-rankers score the
same candidates of the first ``--image-queries`` images (image->text) and ``--text-queries`` texts
(text->image):

- ``baseline``: :func:`albef.evaluation.rerank.one_query_rerank`, the official loop: one fusion call per query
  on its k candidates, the image tokens expanded to k rows;
- ``ours``: :class:`albef.evaluation.rerank.PairScorer`, the evaluator's re-ranker (many queries per call,
  cross-attention K/V once per image, no work on padding, [CLS]-only last layer), with the evaluator's
  default memory plan. The evaluator also scores a pair asked by both directions once; this benchmark
  times each direction on its own, so that saving is not counted.

Each repeat times both, alternately, under ``torch.inference_mode``; the speed-up is the ratio of the median
repeat times. The scores must be equal: bit-identical is reported as ``equal: true`` (the method's claim,
see ``albef/evaluation/rerank.py``), and ``max_abs_diff`` in any case.

Usage (the committed CPU records; one thread, see benchmarks/README.md on shared hosts)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rerank.py --presets tiny --images 64 --k 16 \\
        --image-queries 64 --text-queries 320 --repeats 3 --threads 1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rerank.py --presets base --images 16 --k 16 \\
        --image-queries 4 --text-queries 12 --repeats 2 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import arguments, csv_list, load_average, run_presets
from torch import Tensor

from albef.config.io import to_dict
from albef.data.text import pre_caption
from albef.evaluation.memory_plan import FusionDims, call_budget, plan_memory
from albef.evaluation.metrics import topk_candidates
from albef.evaluation.rerank import Direction, PairScorer, one_query_rerank, query_pairs
from albef.models.albef import ALBEFRetrieval
from albef.models.builders import MODEL_PRESETS, create_model, model_preset
from albef.reporting.environment import collect_environment, utc_now_iso
from albef.reporting.measure import peak_memory, stage_stats
from albef.reporting.schema import RunReport

REAL_COCO = (
    Path(__file__).resolve().parents[2] / "shared/data/real/coco_karpathy_test_5k__albef_format__CVLR-RD.json"
)
MAX_TOKENS = 30
CLS_ID, FIRST_WORD_ID = 101, 104


def resolve_preset(name: str) -> str:
    """``base`` -> ``albef_base``; a registered full name is kept."""
    return name if name in MODEL_PRESETS else f"albef_{name}"


def caption_lengths(count: int, mode: str, seed: int) -> Tensor:
    """``count`` text lengths in tokens ([CLS] included): real COCO caption lengths, or all 30."""
    if mode == "full":
        return torch.full((count,), MAX_TOKENS)
    if REAL_COCO.is_file():
        import json

        records = json.loads(REAL_COCO.read_text(encoding="utf-8"))
        words = [len(pre_caption(c, MAX_TOKENS).split()) for r in records for c in r["caption"]]
        pool = torch.tensor([min(MAX_TOKENS, 1 + n) for n in words])
    else:  # COCO captions have 8-20 words
        pool = torch.arange(9, 22)
    generator = torch.Generator().manual_seed(seed)
    return pool[torch.randint(len(pool), (count,), generator=generator)]


@torch.inference_mode()
def make_features(model: ALBEFRetrieval, args: argparse.Namespace, res: int) -> dict[str, Tensor]:
    """Image tokens and features of random images, text states/masks/features of random token ids."""
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.images, 3, res, res, generator=generator)
    image = [model.encode_image(batch) for batch in images.split(16)]
    lengths = caption_lengths(args.images * args.captions, args.lengths, args.seed)
    mask = (torch.arange(MAX_TOKENS)[None] < lengths[:, None]).long()
    vocab = model.text_encoder.embeddings.word_embeddings.num_embeddings
    ids = torch.randint(FIRST_WORD_ID, vocab, mask.shape, generator=generator) * mask
    ids[:, 0] = CLS_ID
    text = [model.encode_text(i, m) for i, m in zip(ids.split(256), mask.split(256), strict=True)]
    return {
        "image_embeds": torch.cat([e.embeds for e in image]),
        "image_feat": torch.cat([e.feat for e in image]),
        "text_states": torch.cat([t.states for t in text]),
        "text_mask": mask,
        "text_feat": torch.cat([t.feat for t in text]),
    }


def timed(fn: Any, device: torch.device) -> tuple[float, Tensor]:
    """Seconds of one call and its result (the device's queued work included)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def run_direction(
    model: ALBEFRetrieval,
    f: dict[str, Tensor],
    candidates: Tensor,
    direction: Direction,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Time both re-rankers on one direction's queries; their samples, scores and the fusion call count."""
    device = next(model.parameters()).device
    rows = torch.arange(candidates.shape[0])
    budget_mb, max_pairs = call_budget(device)
    plan = plan_memory(
        FusionDims.of(model), args.images, len(f["text_mask"]), f["image_embeds"].shape[1], args.k,
        budget_mb=budget_mb, max_pairs=max_pairs,
    )  # fmt: skip
    # The baseline runs where the model is; ours keeps its features where --features says (its residency).
    on_device = {name: f[name].to(device) for name in ("image_embeds", "text_states", "text_mask")}
    samples: dict[str, list[float]] = {"baseline": [], "ours": []}
    scores: dict[str, Tensor] = {}
    calls = 0
    for _ in range(args.repeats):
        seconds, baseline = timed(
            lambda: one_query_rerank(
                model, on_device["image_embeds"], on_device["text_states"], on_device["text_mask"],
                candidates.to(device), direction,
            ),
            device,
        )  # fmt: skip
        scores["baseline"] = baseline.float().cpu()
        samples["baseline"].append(seconds)
        # A fresh scorer each repeat: its per-text precomputation is part of the timed work.
        scorer = PairScorer(
            model, f["image_embeds"], f["text_states"], f["text_mask"], device,
            pairs_per_call=plan.pairs_per_call, residency=args.features,
        )  # fmt: skip
        image_idx, text_idx = query_pairs(direction, rows, candidates)
        seconds, flat = timed(lambda: scorer.score(image_idx, text_idx), device)  # noqa: B023
        scores["ours"] = flat.view(candidates.shape)
        samples["ours"].append(seconds)
        calls = scorer.calls
    return {"samples": samples, "scores": scores, "calls": calls, "pairs_per_call": plan.pairs_per_call}


def run_preset(preset: str, args: argparse.Namespace, device: torch.device) -> RunReport:
    """Benchmark one preset; its :class:`RunReport`."""
    start, started, load_start = utc_now_iso(), time.perf_counter(), load_average()
    cfg = model_preset(preset)
    if args.image_res:
        cfg.vision.image_res = args.image_res
    torch.manual_seed(args.seed)
    model: ALBEFRetrieval = create_model("retrieval", cfg).eval()  # type: ignore[assignment]
    f = make_features(model, args, cfg.vision.image_res)  # on the CPU: the same features on every device
    model = model.to(device)
    sims = f["image_feat"] @ f["text_feat"].T
    queries = {"i2t": (sims, args.image_queries), "t2i": (sims.T, args.text_queries)}
    report = RunReport(kind="benchmark", task="rerank", dataset="random", model_preset=preset)
    comparisons: dict[str, Any] = {}
    totals = {"baseline": 0.0, "ours": 0.0}
    for direction, (matrix, n) in queries.items():
        _, candidates = topk_candidates(matrix[:n], args.k)
        out = run_direction(model, f, candidates, direction, args)  # type: ignore[arg-type]
        pairs = candidates.numel()
        for impl in ("baseline", "ours"):
            key = f"rerank_{direction}/{impl}"
            report.stages[key] = stage_stats(
                out["samples"][impl], pairs, 0, stage=key, item="pair", precision="fp32"
            )
            totals[impl] += statistics.median(out["samples"][impl])
        base, ours = out["scores"]["baseline"], out["scores"]["ours"]
        comparisons[direction] = {
            "queries": int(candidates.shape[0]),
            "k": int(candidates.shape[1]),
            "pairs": pairs,
            "speedup_median": statistics.median(out["samples"]["baseline"])
            / statistics.median(out["samples"]["ours"]),
            "equal": bool(torch.equal(base, ours)),
            "max_abs_diff": float((base - ours).abs().max()),
            "fusion_calls_ours": out["calls"],
            "fusion_calls_baseline": int(candidates.shape[0]),
            "pairs_per_call": out["pairs_per_call"],
        }
    report.memory = peak_memory(device)
    report.environment = collect_environment(device, "fp32", args.seed, start, time.perf_counter() - started)
    report.config = {"args": arguments(args), "model": to_dict(cfg)}
    lengths = f["text_mask"].sum(1).float()
    report.extra = {
        "speedup": totals["baseline"] / totals["ours"],
        "comparisons": comparisons,
        "images": args.images,
        "features": args.features,
        "texts": int(f["text_mask"].shape[0]),
        "image_tokens": int(f["image_embeds"].shape[1]),
        "text_tokens_mean": float(lengths.mean()),
        "text_lengths": args.lengths,
        "load_average_1m": load_start,
        "load_average_1m_end": load_average(),
        "coco5k_384_memory_plan": plan_memory(
            FusionDims(768, 768, 12, 3072), 5000, 25010, 577, 256, 30
        ).as_dict(),
    }
    return report


def table(reports: list[RunReport]) -> str:
    """One line per preset and direction."""
    lines = [
        f"{'preset':<14}{'dir':<5}{'pairs':>7}{'baseline s':>12}{'ours s':>9}{'speedup':>9}  equal  max|diff|"
    ]
    for report in reports:
        for direction, c in report.extra["comparisons"].items():
            base = report.stages[f"rerank_{direction}/baseline"].latency_batch.p50_ms / 1000
            ours = report.stages[f"rerank_{direction}/ours"].latency_batch.p50_ms / 1000
            lines.append(
                f"{report.model_preset:<14}{direction:<5}{c['pairs']:>7}{base:>12.3f}{ours:>9.3f}"
                f"{c['speedup_median']:>8.2f}x  {c['equal']!s:<5}  {c['max_abs_diff']:.2e}"
            )
        lines.append(f"{report.model_preset:<14}both overall speed-up {report.extra['speedup']:.2f}x")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--presets", type=csv_list(), default=["tiny", "base"], help="e.g. tiny,base")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where both re-rankers run")
    parser.add_argument(
        "--features",
        choices=("host", "device"),
        default="host",
        help="where our re-ranker keeps the features: host (each call's rows copied on a side stream) or "
        "device (copied once; what the evaluator does when they fit)",
    )
    parser.add_argument("--image-res", type=int, help="image resolution (default: the preset's)")
    parser.add_argument("--images", type=int, default=64, help="images in the set")
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--k", type=int, default=16, help="candidates per query")
    parser.add_argument("--image-queries", type=int, default=64, help="image->text queries timed")
    parser.add_argument("--text-queries", type=int, default=320, help="text->image queries timed")
    parser.add_argument("--lengths", choices=("coco", "full"), default="coco", help="text lengths")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--out",
        default="reports/rerank-bench/rerank-{preset}-{device}.json",
        help="output path; {preset} and {device} are filled in",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.k > args.images:
        parser.error("--k cannot exceed --images (text->image candidates)")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_presets(parse_args(argv), run_preset, resolve_preset, table)


if __name__ == "__main__":
    sys.exit(main())
