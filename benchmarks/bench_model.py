"""Stage throughput of the ALBEF model against an eager-attention baseline that holds the same weights.

Three inference stages of ``ContrastiveALBEF`` (the retrieval / pretraining core) are timed:

- ``image_encode``: ``encode_image`` — the ViT over all patches, ``vision_proj`` of the [CLS], L2 norm (images/s);
- ``text_encode``: ``encode_text`` — embeddings, the text-mode layers ``[0, fusion_layer)``, ``text_proj``, norm (texts/s);
- ``fusion_itm``: ``fuse`` + ``itm_logits`` — the fusion layers on given text states with cross-attention to
  given image tokens, then ``itm_head`` on the fused [CLS] (image-text pairs/s).

The baseline stands in for the official code, which no longer runs on current transformers: it is the code
the official ``xbert.py`` / ``vit.py`` were copied from, with their eager attention (matmul, softmax, matmul):
transformers' ``BertModel`` (text layers) and ``BertEncoder`` (fusion layers with cross-attention), both with
``attn_implementation="eager"``, and timm's ``VisionTransformer`` with ``fused_attn=False`` in every block.
Our weights are loaded into it strictly, and the outputs of both are compared before anything is timed.

Each preset's result is one ``RunReport`` (``kind="benchmark"``, ``task="model"``): our stages under
``{stage}/{precision}/bs{B}`` (the keys of ``albef bench model``), the baseline's under
``{stage}/baseline/{precision}/bs{B}``, and per pair of them the speed-ups and the largest output difference
in ``extra["comparisons"]``.

Usage::

    python benchmarks/bench_model.py --presets tiny,base --precisions fp32,cast_bf16 --device cpu \\
        --batch-size 8 --image-res 256 --text-len 30 --warmup 2 --iters 10
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    IMPLS,
    PRECISIONS,
    arguments,
    csv_list,
    impl_key,
    inference,
    load_average,
    run_presets,
    speedups,
    weight_dtype,
)
from _eager_baseline import Baseline, baseline_bert, baseline_vit, build_ours, resolve_preset
from torch import Tensor

from albef.models.albef import ContrastiveALBEF
from albef.models.bert import MASK_VALUE
from albef.reporting.environment import collect_environment, utc_now_iso
from albef.reporting.measure import StageTimer
from albef.reporting.schema import RunReport, StageStats
from albef.workflows.bench import BenchInputs, bench_model_config, make_inputs

STAGES = {"image_encode": "image", "text_encode": "text", "fusion_itm": "pair"}
"""Stage name -> what one item is (the names and items of ``albef bench model``)."""

Outputs = dict[str, Tensor]
StageFn = Callable[[], Outputs]


# -- stages -------------------------------------------------------------------------------------------------
def stage_functions(ours: ContrastiveALBEF, base: Baseline, x: BenchInputs) -> dict[str, dict[str, StageFn]]:
    """Per stage, the call of each implementation on the same inputs; each returns named outputs."""
    with torch.inference_mode():
        text = ours.encode_text(x.input_ids, x.attention_mask)
        image_embeds = ours.encode_image(x.images).embeds

    def ours_image() -> Outputs:
        enc = ours.encode_image(x.images)
        return {"embeds": enc.embeds, "feat": enc.feat}

    def base_image() -> Outputs:
        embeds = base.vit.forward_features(x.images)
        return {"embeds": embeds, "feat": F.normalize(ours.vision_proj(embeds[:, 0]), dim=-1)}

    def ours_text() -> Outputs:
        enc = ours.encode_text(x.input_ids, x.attention_mask)
        return {"states": enc.states, "feat": enc.feat}

    def base_text() -> Outputs:
        states = base.text(input_ids=x.input_ids, attention_mask=x.attention_mask).last_hidden_state
        return {"states": states, "feat": F.normalize(ours.text_proj(states[:, 0]), dim=-1)}

    def ours_fusion() -> Outputs:
        fused = ours.fuse(text, image_embeds)
        return {"fused": fused, "itm_logits": ours.itm_logits(fused)}

    def base_fusion() -> Outputs:
        # The official 'fusion' mode: the extended (1 - mask) * -10000 self-attention mask, and the inverted
        # all-ones image mask (all zeros), added in every cross-attention.
        dtype = text.states.dtype
        self_mask = (1.0 - x.attention_mask[:, None, None, :].to(dtype)) * MASK_VALUE
        image_mask = image_embeds.new_zeros(image_embeds.shape[0], 1, 1, image_embeds.shape[1])
        fused = base.fusion(
            text.states,
            attention_mask=self_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
        return {"fused": fused, "itm_logits": ours.itm_head(fused[:, 0])}

    return {
        "image_encode": {"ours": ours_image, "baseline": base_image},
        "text_encode": {"ours": ours_text, "baseline": base_text},
        "fusion_itm": {"ours": ours_fusion, "baseline": base_fusion},
    }


# -- measurement --------------------------------------------------------------------------------------------
def max_abs_diffs(fns: dict[str, StageFn], precision: str, device: torch.device) -> dict[str, float]:
    """Max |ours - baseline| of every output of a stage (in float32)."""
    with inference(precision, device):
        a, b = fns["ours"](), fns["baseline"]()
    return {k: float((a[k].float() - b[k].float()).abs().max()) for k in a}


def measure(
    fns: dict[str, StageFn], stage: str, precision: str, batch: int, timer: StageTimer, iters: int
) -> dict[str, StageStats]:
    """Time both implementations call by call in ABBA order (a load change on a shared host hits both alike).

    The timer's ``warmup`` first calls of each implementation are untimed.
    """
    keys = {impl: impl_key(stage, impl, precision, batch) for impl in IMPLS}
    with inference(precision, timer.device):
        for i in range(timer.warmup + iters):
            for impl in IMPLS if i % 2 == 0 else IMPLS[::-1]:
                with timer.stage(keys[impl], batch, item=STAGES[stage], precision=precision):
                    fns[impl]()
    return {impl: timer.stage_stats(keys[impl]) for impl in IMPLS}


def profile_top(
    fn: StageFn, precision: str, device: torch.device, calls: int, top: int
) -> list[dict[str, Any]]:
    """The ``top`` operators by self time over ``calls`` calls (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with inference(precision, device), profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:top]
    return [
        {"op": e.key, "calls": e.count, "self_ms_per_call": getattr(e, key) / 1000.0 / calls} for e in events
    ]


def run_precision(
    master: ContrastiveALBEF,
    base_master: Baseline,
    x: BenchInputs,
    precision: str,
    timer: StageTimer,
    args: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    """Compare and time every stage at one precision; the comparison of each stage (speed-ups, diffs)."""
    dtype = weight_dtype(precision)
    ours = master if dtype == torch.float32 else copy.deepcopy(master).to(dtype)
    base = base_master if dtype == torch.float32 else base_master.to(dtype)
    xp = BenchInputs(x.images.to(dtype), x.input_ids, x.attention_mask)
    comparisons = {}
    for stage, fns in stage_functions(ours, base, xp).items():
        diffs = max_abs_diffs(fns, precision, timer.device)
        stats = measure(fns, stage, precision, args.batch_size, timer, args.iters)
        comparison: dict[str, Any] = {
            "ours": stats["ours"].stage,
            "baseline": stats["baseline"].stage,
            **speedups(stats["ours"], stats["baseline"]),
            "max_abs_diff": diffs,
        }
        if args.profile_top:
            comparison["profile"] = {
                impl: profile_top(fns[impl], precision, timer.device, args.profile_calls, args.profile_top)
                for impl in IMPLS
            }
        comparisons[stats["ours"].stage] = comparison
        print(f"  {precision:8s} {stage:12s} speed-up {comparison['speedup']:.3f}", file=sys.stderr)
    return comparisons


def run_preset(preset: str, args: argparse.Namespace, device: torch.device) -> RunReport:
    """Compare and time every stage of one preset at every requested precision."""
    cfg = dataclasses.replace(bench_model_config(preset, args.image_res), queue_size=8)
    load_start = load_average()  # before the run: shows whether the host was busy
    start_time, start = utc_now_iso(), time.perf_counter()
    master = build_ours(cfg, args.seed).to(device)
    base_master = Baseline(
        baseline_vit(master.visual_encoder, cfg.vision), *baseline_bert(master.text_encoder, cfg.text)
    )
    for module in (base_master.vit, base_master.text, base_master.fusion):
        module.to(device)
    x = make_inputs(cfg, args.batch_size, args.text_len, args.seed, device)
    print(f"[{preset}] built in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    timer = StageTimer(device, warmup=args.warmup)
    comparisons = {}
    for precision in args.precisions:
        comparisons.update(run_precision(master, base_master, x, precision, timer, args))
    return RunReport(
        kind="benchmark",
        task="model",
        dataset="synthetic-inputs",
        model_preset=preset,
        stages=timer.stats(),
        memory=timer.peak_memory(),
        environment=collect_environment(
            device, ",".join(args.precisions), args.seed, start_time, time.perf_counter() - start
        ),
        config={"args": arguments(args), "model": dataclasses.asdict(cfg)},
        extra={
            "benchmark": "model-stages-vs-eager-baseline",
            "baseline": (
                "transformers BertModel/BertEncoder (attn_implementation='eager') + timm VisionTransformer "
                "(fused_attn=False), loaded with our weights"
            ),
            "image_res": cfg.vision.image_res,
            "text_len": args.text_len,
            "text_lengths": x.attention_mask.sum(1).tolist(),
            "load_average_1m": load_start,
            "load_average_1m_end": load_average(),
            "comparisons": comparisons,
        },
    )


# -- report -------------------------------------------------------------------------------------------------
def table(reports: list[RunReport]) -> str:
    """A plain-text table: items/s, p50 latency, speed-up and the largest output difference per stage."""
    from tabulate import tabulate

    lines = []
    for report in reports:
        for key, row in report.extra["comparisons"].items():
            ours, base = report.stages[row["ours"]], report.stages[row["baseline"]]
            lines.append(
                [
                    (report.model_preset or "").removeprefix("albef_"),
                    ours.precision,
                    key.split("/", 1)[0],
                    f"{ours.items_per_s:.1f}",
                    f"{base.items_per_s:.1f}",
                    f"{row['speedup']:.2f}x",
                    f"{row['speedup_p50']:.2f}x",
                    f"{ours.latency_batch.p50_ms:.2f}",
                    f"{base.latency_batch.p50_ms:.2f}",
                    f"{max(row['max_abs_diff'].values()):.2e}",
                ]
            )
    headers = [
        "preset",
        "precision",
        "stage",
        "ours items/s",
        "baseline items/s",
        "speed-up",
        "p50 speed-up",
        "ours p50 ms",
        "base p50 ms",
        "max |diff|",
    ]
    return tabulate(lines, headers=headers, tablefmt="github")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--presets", type=csv_list(), default=["tiny", "base"], help="e.g. tiny,base")
    parser.add_argument(
        "--precisions", type=csv_list(), default=["fp32", "cast_bf16"], help=", ".join(PRECISIONS)
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-res", type=int, default=None, help="default: the preset's image_res")
    parser.add_argument("--text-len", type=int, default=30, help="padded text length L")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--out",
        default="reports/model-bench/model-{preset}-{device}.json",
        help="output path; {preset} and {device} are filled in (needed when several presets run)",
    )
    parser.add_argument("--profile-top", type=int, default=0, help="also profile: keep the top N ops")
    parser.add_argument("--profile-calls", type=int, default=3)
    args = parser.parse_args(argv)
    for p in args.precisions:
        weight_dtype(p)
    if args.iters < 1:
        parser.error("--iters must be at least 1")
    if len(args.presets) > 1 and "{preset}" not in args.out:
        parser.error("--out needs a {preset} field when several presets run")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_presets(parse_args(argv), run_preset, resolve_preset, table)


if __name__ == "__main__":
    sys.exit(main())
