"""A whole retrieval evaluation, ours against a stand-in for the official code, measured side by side.

The stand-in (:mod:`_official_retrieval`) does the official work: eager attention everywhere, texts padded to
30 tokens, one fusion call per query with the image tokens repeated k times. Ours is the evaluator's code:
``encode_image`` / ``encode_text`` (SDPA attention), the ITC matrix and top-k of
:func:`albef.evaluation.candidates.select_candidates`, and the re-rank of
:class:`albef.evaluation.pair_scorer.PairScorer` with the evaluator's memory plan. Both hold the same random
weights (base preset at 384 px by default) and are timed alternately in one run, stage by stage:

- ``image_encode`` and ``text_encode`` on the same ``--encode-images`` images and ``--encode-texts`` texts
  (outputs compared);
- ``itc_topk``: the ITC matrix and every row's top k, both directions, at the full target size (random
  features of ``--target-images`` x ``--target-texts``, COCO-5k by default);
- ``rerank_i2t`` / ``rerank_t2i`` per k: queries of a set of ``--images`` encoded images with ``--captions``
  captions each (COCO caption lengths), the same candidates for both; the official loop on a few queries,
  ours on more (its calls share an image's keys and values across the queries of a call, so fewer queries
  understate its speed). The rankings of the common queries must be equal; the scores differ in the last bits
  only (eager against SDPA attention kernels; against our own one-query loop they are equal bit for bit, see
  ``bench_rerank.py``).

A CPU cannot run the official loop over COCO-5k (about 7.7 million fusion pairs at k = 256: weeks), so the
end-to-end time of each side is **projected from its measured rates**: images x s/image + texts x s/text +
the ITC/top-k time + image queries x s/query (i2t) + text queries x s/query (t2i). Ours is projected
without the pairs that the two directions share (the evaluator scores those once) and with its t2i calls
holding fewer queries per image than a full run would: both make the projection conservative for ours.

Usage (the committed record; one run of about 20 minutes on 2 cores)::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_retrieval_e2e.py --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import arguments, csv_list, load_average
from _eager_baseline import Baseline, baseline_bert, baseline_vit, build_ours
from _official_retrieval import OfficialRetrieval
from bench_rerank import CLS_ID, FIRST_WORD_ID, MAX_TOKENS, caption_lengths
from torch import Tensor

from albef.engine.distributed import World
from albef.evaluation.candidates import select_candidates
from albef.evaluation.memory_plan import FusionDims, call_budget, plan_memory
from albef.evaluation.pair_scorer import PairScorer
from albef.evaluation.rerank import rerank_queries
from albef.models.albef import ContrastiveALBEF
from albef.reporting.environment import collect_environment, utc_now_iso
from albef.reporting.measure import StageTimer, peak_memory, stage_stats
from albef.reporting.schema import RunReport, StageStats
from albef.workflows.bench import bench_model_config, resolve_preset_name

IMPLS = ("ours", "official")


def log(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def random_texts(count: int, vocab: int, seed: int) -> tuple[Tensor, Tensor]:
    """Token ids and masks (count, 30) of texts with COCO caption lengths, [CLS] first, padded with 0."""
    lengths = caption_lengths(count, "coco", seed)
    mask = (torch.arange(MAX_TOKENS)[None] < lengths[:, None]).long()
    ids = (
        torch.randint(FIRST_WORD_ID, vocab, mask.shape, generator=torch.Generator().manual_seed(seed)) * mask
    )
    ids[:, 0] = CLS_ID
    return ids, mask


class Bench:
    """One run: the two implementations, the timer and what the report collects."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cfg = bench_model_config(resolve_preset_name(args.preset), args.image_res)
        self.ours: ContrastiveALBEF = build_ours(self.cfg, args.seed)
        base = Baseline(
            baseline_vit(self.ours.visual_encoder, self.cfg.vision),
            *baseline_bert(self.ours.text_encoder, self.cfg.text),
        )
        self.official = OfficialRetrieval(self.ours, base)
        self.stages: dict[str, StageStats] = {}
        self.per_item: dict[str, dict[str, float]] = {}  # stage -> impl -> seconds per item (median)
        self.checks: dict[str, Any] = {}

    def record(self, stage: str, impl: str, samples: list[float], items: int, item: str) -> float:
        """Store a stage's samples; its median seconds per item."""
        key = f"{stage}/{impl}"
        self.stages[key] = stage_stats(samples, items, 0, stage=key, item=item, precision="fp32")
        per_item = statistics.median(samples) / items
        self.per_item.setdefault(stage, {})[impl] = per_item
        return per_item

    # -- encoders -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encoders(self) -> None:
        a, res = self.args, self.cfg.vision.image_res
        images = torch.randn(a.encode_images, 3, res, res, generator=torch.Generator().manual_seed(a.seed))
        ids, mask = random_texts(a.encode_texts, self.cfg.text.vocab_size, a.seed)
        runs: dict[str, dict[str, Callable[[], Any]]] = {
            "image_encode": {
                "ours": lambda: self._ours_images(images),
                "official": lambda: self.official.encode_images(images),
            },
            "text_encode": {
                "ours": lambda: self._ours_texts(ids, mask),
                "official": lambda: self.official.encode_texts(ids, mask),
            },
        }
        for stage, fns in runs.items():
            outputs = {impl: fn() for impl, fn in fns.items()}  # warm-up, and the outputs compared
            self.checks[f"{stage}_max_abs_diff"] = max(
                float((x - y).abs().max()) for x, y in zip(outputs["ours"], outputs["official"], strict=True)
            )
            samples: dict[str, list[float]] = {impl: [] for impl in IMPLS}
            for r in range(a.repeats):
                for impl in IMPLS if r % 2 == 0 else IMPLS[::-1]:
                    samples[impl].append(timed(fns[impl])[0])
            count = images.shape[0] if stage == "image_encode" else ids.shape[0]
            for impl in IMPLS:
                self.record(stage, impl, samples[impl], count, "image" if stage == "image_encode" else "text")
            log(f"{stage}: " + ", ".join(f"{i} {self.per_item[stage][i] * 1e3:.1f} ms/item" for i in IMPLS))

    def _ours_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        encoded = [self.ours.encode_image(b) for b in images.split(self.args.image_batch)]
        return torch.cat([e.embeds for e in encoded]), torch.cat([e.feat for e in encoded])

    def _ours_texts(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        encoded = [self.ours.encode_text(i, m) for i, m in zip(ids.split(256), mask.split(256), strict=True)]
        return torch.cat([e.states for e in encoded]), torch.cat([e.feat for e in encoded])

    # -- ITC and top-k at the target size ---------------------------------------------------------------
    @torch.inference_mode()
    def itc_topk(self, k: int) -> None:
        a = self.args
        gen = torch.Generator().manual_seed(a.seed)
        image_feat = F.normalize(torch.randn(a.target_images, self.cfg.embed_dim, generator=gen), dim=-1)
        text_feat = F.normalize(torch.randn(a.target_texts, self.cfg.embed_dim, generator=gen), dim=-1)

        def ours() -> None:
            select_candidates(image_feat @ text_feat.T, k, World(), StageTimer(torch.device("cpu")))

        samples = {
            "ours": [timed(ours)[0]],
            "official": [timed(lambda: self.official.itc_topk(image_feat, text_feat, k))[0]],
        }
        for impl in IMPLS:
            self.record(f"itc_topk/k{k}", impl, samples[impl], 1, "split")
        log(f"itc_topk k={k}: " + ", ".join(f"{i} {samples[i][0]:.1f} s" for i in IMPLS))

    # -- the re-rank --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def features(self) -> dict[str, Tensor]:
        """The re-rank set: ``--images`` random images and ``--captions`` texts each, encoded by ours."""
        a, res = self.args, self.cfg.vision.image_res
        images = torch.randn(a.images, 3, res, res, generator=torch.Generator().manual_seed(a.seed + 1))
        ids, mask = random_texts(a.images * a.captions, self.cfg.text.vocab_size, a.seed + 1)
        start = time.perf_counter()
        embeds, image_feat = self._ours_images(images)
        states, text_feat = self._ours_texts(ids, mask)
        log(
            f"encoded the re-rank set ({a.images} images, {ids.shape[0]} texts) in {time.perf_counter() - start:.0f} s"
        )
        return {
            "embeds": embeds, "image_feat": image_feat, "states": states, "mask": mask, "text_feat": text_feat,
            "sims": image_feat @ text_feat.T,
        }  # fmt: skip

    def rerank(
        self, f: dict[str, Tensor], k: int, official_queries: int, our_queries: tuple[int, int]
    ) -> None:
        sims = f["sims"]
        chosen = select_candidates(sims, k, World(), StageTimer(torch.device("cpu")))
        budget_mb, max_pairs = call_budget(torch.device("cpu"))
        plan = plan_memory(
            FusionDims.of(self.ours), sims.shape[0], sims.shape[1], f["embeds"].shape[1], k,
            budget_mb=budget_mb, max_pairs=max_pairs,
        )  # fmt: skip
        for direction, n_ours in zip(("i2t", "t2i"), our_queries, strict=True):
            n_ours = min(n_ours, chosen.rows[direction].shape[0])
            n_official = min(official_queries, n_ours)
            candidates = chosen.candidates[direction][:n_ours]
            rows = torch.arange(n_ours)
            loop = self.official.rerank_i2t if direction == "i2t" else self.official.rerank_t2i
            matrix = sims if direction == "i2t" else sims.T
            seconds_official, official = timed(
                lambda: loop(matrix, f["embeds"], f["states"], f["mask"], k, range(n_official))  # noqa: B023
            )
            scorer = PairScorer(
                self.ours, f["embeds"], f["states"], f["mask"], torch.device("cpu"),
                pairs_per_call=plan.pairs_per_call, text_batch=256,
            )  # fmt: skip
            seconds_ours, ours = timed(lambda: rerank_queries(scorer, direction, rows, candidates))  # noqa: B023
            stage = f"rerank_{direction}/k{k}"
            self.record(stage, "official", [seconds_official], n_official, "query")
            self.record(stage, "ours", [seconds_ours], n_ours, "query")
            common = ours[:n_official]
            self.checks[f"{stage}"] = {
                "official_queries": n_official,
                "our_queries": n_ours,
                "pairs_per_call": plan.pairs_per_call,
                "fusion_calls_ours": scorer.calls,
                "scores_equal": bool(torch.equal(common, official)),
                "max_abs_diff": float((common - official).abs().max()),
                "rankings_equal": bool(
                    torch.equal(
                        candidates[:n_official].gather(
                            1, common.argsort(dim=1, descending=True, stable=True)
                        ),
                        candidates[:n_official].gather(
                            1, official.argsort(dim=1, descending=True, stable=True)
                        ),
                    )
                ),
            }
            ratio = self.per_item[stage]["official"] / self.per_item[stage]["ours"]
            log(
                f"{stage}: official {seconds_official:.1f} s / {n_official} q, ours {seconds_ours:.1f} s / {n_ours} q: {ratio:.1f}x per query, equal {self.checks[stage]['scores_equal']}"
            )

    def projection(self, k: int) -> dict[str, Any]:
        """Projected seconds of a whole evaluation of the target split, per side, and their ratio."""
        a, p = self.args, self.per_item
        parts = {}
        for impl in IMPLS:
            parts[impl] = {
                "image_encode": a.target_images * p["image_encode"][impl],
                "text_encode": a.target_texts * p["text_encode"][impl],
                "itc_topk": p[f"itc_topk/k{k}"][impl],
                "rerank_i2t": a.target_images * p[f"rerank_i2t/k{k}"][impl],
                "rerank_t2i": a.target_texts * p[f"rerank_t2i/k{k}"][impl],
            }
            parts[impl]["total"] = sum(parts[impl].values())
        return {
            "k": k,
            "seconds": parts,
            "speedup": parts["official"]["total"] / parts["ours"]["total"],
            "rerank_speedup": (parts["official"]["rerank_i2t"] + parts["official"]["rerank_t2i"])
            / (parts["ours"]["rerank_i2t"] + parts["ours"]["rerank_t2i"]),
        }


def run(args: argparse.Namespace) -> RunReport:
    start_iso, start, load_start = utc_now_iso(), time.perf_counter(), load_average()
    bench = Bench(args)
    bench.encoders()
    for k in args.ks:
        bench.itc_topk(k)
    f = bench.features()
    for k, official_q, our_i, our_t in zip(
        args.ks, args.official_queries, args.our_image_queries, args.our_text_queries, strict=True
    ):
        bench.rerank(f, k, official_q, (our_i, our_t))
    projections = {f"k{k}": bench.projection(k) for k in args.ks}
    report = RunReport(
        kind="benchmark",
        task="retrieval_e2e",
        dataset="random",
        model_preset=resolve_preset_name(args.preset),
    )
    report.stages = bench.stages
    report.memory = peak_memory(torch.device("cpu"))
    report.environment = collect_environment(
        torch.device("cpu"), "fp32", args.seed, start_iso, time.perf_counter() - start
    )
    report.config = {"args": arguments(args), "model": dataclasses.asdict(bench.cfg)}
    report.extra = {
        "benchmark": "retrieval-end-to-end-vs-official-stand-in",
        "official_stand_in": "benchmarks/_official_retrieval.py: eager attention, texts padded to 30, one fusion "
        "call per query with the image tokens repeated k times",
        "target": {"images": args.target_images, "texts": args.target_texts, "image_res": args.image_res},
        "projections": projections,
        "checks": bench.checks,
        "seconds_per_item": bench.per_item,
        "load_average_1m": load_start,
        "load_average_1m_end": load_average(),
    }
    return report


def table(report: RunReport) -> str:
    lines = [f"{'k':>4}  {'stage':<13}{'official s':>12}{'ours s':>10}{'ratio':>8}"]
    for name, proj in report.extra["projections"].items():
        s = proj["seconds"]
        for stage in ("image_encode", "text_encode", "itc_topk", "rerank_i2t", "rerank_t2i", "total"):
            o, u = s["official"][stage], s["ours"][stage]
            lines.append(f"{name:>4}  {stage:<13}{o:>12.0f}{u:>10.0f}{o / u:>7.1f}x")
    for stage, check in report.extra["checks"].items():
        if isinstance(check, dict):
            lines.append(
                f"{stage}: rankings equal {check['rankings_equal']}, scores max |diff| {check['max_abs_diff']:.1e}"
            )
    return "\n".join(lines)


def markdown(report: RunReport) -> str:
    """The record as Markdown: the projected evaluation per k and stage, the checks, the measured rates."""
    x, env = report.extra, report.environment
    target = x["target"]
    lines = [
        "# Retrieval evaluation end to end: ours against the official stand-in",
        "",
        f"{report.model_preset} at {target['image_res']} px, random weights, fp32, {env.device_name}, "
        f"{env.cpu_threads} threads, torch {env.torch}, git {env.git}. Each side's whole evaluation of a split of "
        f"{target['images']:,} images and {target['texts']:,} captions (COCO-5k test), projected from its rates "
        "measured side by side in this run (see `benchmarks/bench_retrieval_e2e.py`).",
        "",
        "| k | stage | official (s) | ours (s) | ratio |",
        "|---|---|---|---|---|",
    ]
    for proj in x["projections"].values():
        s = proj["seconds"]
        for stage in ("image_encode", "text_encode", "itc_topk", "rerank_i2t", "rerank_t2i", "total"):
            o, u = s["official"][stage], s["ours"][stage]
            name = f"**{stage}**" if stage == "total" else stage
            lines.append(f"| {proj['k']} | {name} | {o:,.0f} | {u:,.0f} | {o / u:.1f}x |")
    lines += [
        "",
        "| re-rank sample | official queries | our queries | rankings equal | scores max abs diff |",
    ]
    lines += ["|---|---|---|---|---|"]
    for stage, c in x["checks"].items():
        if isinstance(c, dict):
            lines.append(
                f"| {stage} | {c['official_queries']} | {c['our_queries']} | {c['rankings_equal']} "
                f"| {c['max_abs_diff']:.1e} |"
            )
    lines += [
        "",
        f"Encoder outputs, largest difference: images {x['checks']['image_encode_max_abs_diff']:.1e}, texts "
        f"{x['checks']['text_encode_max_abs_diff']:.1e} (eager against SDPA attention).",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--image-res", type=int, default=384)
    parser.add_argument("--ks", type=csv_list(int), default=[16, 256], help="candidates per query")
    parser.add_argument(
        "--images", type=int, default=256, help="images of the re-rank set (>= the largest k)"
    )
    parser.add_argument("--captions", type=int, default=5, help="captions per image of the re-rank set")
    parser.add_argument(
        "--official-queries", type=csv_list(int), default=[16, 3], help="per k, per direction"
    )
    parser.add_argument("--our-image-queries", type=csv_list(int), default=[64, 8], help="per k")
    parser.add_argument("--our-text-queries", type=csv_list(int), default=[1280, 64], help="per k")
    parser.add_argument("--encode-images", type=int, default=16)
    parser.add_argument("--encode-texts", type=int, default=256)
    parser.add_argument("--image-batch", type=int, default=16, help="our encoder's image batch")
    parser.add_argument("--target-images", type=int, default=5000, help="projected split (COCO-5k test)")
    parser.add_argument("--target-texts", type=int, default=25010)
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats of the encoders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/bench/retrieval-e2e-{preset}-cpu.json"))
    parser.add_argument("--render", type=Path, help="only write the Markdown of this record (run nothing)")
    args = parser.parse_args(argv)
    lists = (args.official_queries, args.our_image_queries, args.our_text_queries)
    if any(len(x) != len(args.ks) for x in lists):
        parser.error("--official-queries, --our-image-queries and --our-text-queries need one value per k")
    if max(args.ks) > args.images:
        parser.error("--images must be at least the largest k (text->image candidates)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        args.render.with_suffix(".md").write_text(markdown(RunReport.load(args.render)), encoding="utf-8")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args)
    out = Path(str(args.out).format(preset=args.preset))
    report.save(out)
    out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(table(report))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
