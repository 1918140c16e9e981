"""Throughput of the full ALBEF pretraining step against an eager-attention baseline with the same weights.

One step is what the trainer does per batch: ``PretrainObjective`` (clamp temp, online encoders, EMA update
and teacher passes, ITC over batch + queue, enqueue, ITM with hard negatives, MLM with the teacher) under the
precision's autocast, ``backward`` of the summed losses, ``optimizer.step()`` and ``zero_grad``. The step is
split by timing wrappers installed on the model instance:

- ``momentum``: ``update_momentum`` (the EMA update) + the teacher passes ``encode_image_m``,
  ``encode_text_m`` and ``mlm_logits_m``;
- ``queue``: ``queue.enqueue``;
- ``forward``: the objective call minus ``momentum`` and ``queue`` (online encoders, ITC, ITM, MLM, loss sum);
- ``backward``: ``loss.backward()``; ``optimizer``: ``optimizer.step()`` + ``zero_grad``.

The baseline stands in for the official code, which no longer runs on current transformers: the same model
(a deep copy, identical weights and GEMMs) with eager attention (matmul, softmax, matmul) everywhere, i.e.
``MultiHeadAttention.fused = False`` in the BERT and ``fused_attn = False`` in every timm ViT block, as the
official ``xbert.py`` / ``vit.py`` compute it.

Each preset's result is one ``RunReport`` (``kind="benchmark"``, ``task="pretrain"``): the whole step as
stage ``pretrain_step/{precision}/bs{B}`` (item = sample), each part as ``pretrain_step.{part}/...``
(per-step seconds of that part), the baseline's under ``.../baseline/{precision}/bs{B}``, and the speed-ups,
part shares and per-step losses in ``extra["comparisons"]``.

Usage::

    python benchmarks/bench_pretrain.py --presets tiny --precisions fp32,amp_bf16 --threads 1 \\
        --warmup 3 --iters 30
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from _common import IMPLS, arguments, csv_list, impl_key, load_average, run_presets, speedups

from albef.config.schema import OptimConfig
from albef.data.collate import ImageTextBatch
from albef.data.tokenizer import TokenBatch
from albef.engine.optim import build_optimizer
from albef.engine.precision import Precision, resolve_precision
from albef.models.albef import ALBEFPretrain
from albef.models.bert import MultiHeadAttention
from albef.models.builders import create_model
from albef.reporting.environment import collect_environment, utc_now_iso
from albef.reporting.measure import StageTimer, stage_stats, timed
from albef.reporting.schema import RunReport, StageStats
from albef.tasks.pretrain import PretrainObjective
from albef.workflows.bench import bench_model_config, make_inputs, resolve_preset_name

STEP = "pretrain_step"
PARTS = ("forward", "backward", "optimizer", "momentum", "queue")
MOMENTUM_METHODS = ("update_momentum", "encode_image_m", "encode_text_m", "mlm_logits_m")


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """The tokenizer facts ``PretrainObjective`` reads (BERT's uncased ids; no vocabulary file needed)."""

    vocab_size: int
    mask_token_id: int = 103
    pad_token_id: int = 0
    cls_token_id: int = 101


# -- models -------------------------------------------------------------------------------------------------
def make_eager(model: ALBEFPretrain) -> ALBEFPretrain:
    """Eager attention in every BERT attention and ViT block (online and teacher), pinned for every call.

    ``VisionEncoder.forward`` re-selects timm's attention path per call, so that choice is disabled on the
    instance after setting ``fused_attn = False``.
    """
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.fused = False
        elif hasattr(module, "fused_attn"):
            setattr(module, "fused_attn", False)  # noqa: B010  # timm Attention's plain bool
        if hasattr(module, "_select_attention"):
            module._select_attention = lambda x: None  # type: ignore[method-assign]
    return model


class PartTimer:
    """Accumulates synchronised wall time per part within one step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    def wrap(self, fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        """``fn`` with its calls timed into ``part``."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.time(part):
                return fn(*args, **kwargs)

        return timed

    @contextlib.contextmanager
    def time(self, part: str) -> Iterator[None]:
        """Time the block into ``part`` (the library's synchronised clock)."""
        with timed(self.device) as elapsed:
            yield
        self.seconds[part] = self.seconds.get(part, 0.0) + elapsed.seconds


def instrument(model: ALBEFPretrain, timer: PartTimer) -> None:
    """Install the timing wrappers on the model instance (and its queue)."""
    for name in MOMENTUM_METHODS:
        setattr(model, name, timer.wrap(getattr(model, name), "momentum"))
    model.queue.enqueue = timer.wrap(model.queue.enqueue, "queue")  # type: ignore[method-assign]


@dataclasses.dataclass
class Trainee:
    """A model with its optimizer, objective and part timer."""

    model: ALBEFPretrain
    optimizer: torch.optim.Optimizer
    timer: PartTimer


def make_trainee(model: ALBEFPretrain, device: torch.device) -> Trainee:
    """Move ``model`` to ``device`` in train mode, instrument it and give it an AdamW."""
    model.to(device).train()
    timer = PartTimer(device)
    instrument(model, timer)
    return Trainee(model, build_optimizer(model, OptimConfig()), timer)


def train_step(
    t: Trainee, objective: PretrainObjective, batch: ImageTextBatch, precision: Precision, alpha: float
) -> tuple[dict[str, float], float]:
    """One training step; seconds per part and the summed loss."""
    t.timer.seconds = dict.fromkeys(PARTS, 0.0)
    with t.timer.time("objective"), precision.autocast():
        losses = objective(t.model, batch, alpha)
        loss = losses["itc_loss"] + losses["itm_loss"] + losses["mlm_loss"]
    with t.timer.time("backward"):
        loss.backward()
    with t.timer.time("optimizer"):
        t.optimizer.step()
        t.optimizer.zero_grad(set_to_none=True)
    parts = t.timer.seconds
    parts["forward"] = parts.pop("objective") - parts["momentum"] - parts["queue"]
    return parts, float(loss.detach())


# -- measurement --------------------------------------------------------------------------------------------
def part_stages(
    parts: list[dict[str, float]], impl: str, precision: str, batch: int, warmup: int
) -> dict[str, StageStats]:
    """One stage per part from its per-step seconds (``pretrain_step.forward/fp32/bs8``, ...)."""
    return {
        key: stage_stats(
            [p[part] for p in parts], batch, warmup, stage=key, item="sample", precision=precision
        )
        for part in PARTS
        for key in [impl_key(f"{STEP}.{part}", impl, precision, batch)]
    }


def part_shares(parts: list[dict[str, float]], step: StageStats) -> dict[str, float]:
    """Each part's share of the total timed step time."""
    total_s = sum(step.samples_ms) / 1000.0
    return {part: sum(p[part] for p in parts) / total_s for part in PARTS}


def run_precision(
    master: ALBEFPretrain,
    batch: ImageTextBatch,
    objective: PretrainObjective,
    precision_name: str,
    args: argparse.Namespace,
    timer: StageTimer,
) -> tuple[dict[str, StageStats], dict[str, Any]]:
    """Train fresh copies of ``master`` (ours, eager baseline) step by step, interleaved ABBA.

    Returns:
        The step and part stages of both implementations, and their comparison.
    """
    device = timer.device
    precision = resolve_precision(precision_name, device)
    if precision.grad_scaler() is not None:
        raise ValueError(f"{precision_name}: fp16 with a GradScaler is not supported here; use amp_bf16")
    trainees = {
        "ours": make_trainee(copy.deepcopy(master), device),
        "baseline": make_trainee(make_eager(copy.deepcopy(master)), device),
    }
    keys = {impl: impl_key(STEP, impl, precision_name, args.batch_size) for impl in IMPLS}
    parts: dict[str, list[dict[str, float]]] = {impl: [] for impl in IMPLS}
    losses: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for i in range(args.warmup + args.iters):
        for impl in IMPLS if i % 2 == 0 else IMPLS[::-1]:
            torch.manual_seed(args.seed + i)  # same dropout, negatives and masks for both
            with timer.stage(keys[impl], args.batch_size, item="sample", precision=precision_name):
                split, loss = train_step(trainees[impl], objective, batch, precision, args.alpha)
            losses[impl].append(loss)
            if i >= args.warmup:
                parts[impl].append(split)
        print(f"  step {i + 1}/{args.warmup + args.iters}", file=sys.stderr)
    stages = {keys[impl]: timer.stage_stats(keys[impl]) for impl in IMPLS}
    for impl in IMPLS:
        stages.update(part_stages(parts[impl], impl, precision_name, args.batch_size, args.warmup))
    ours, base = stages[keys["ours"]], stages[keys["baseline"]]
    comparison: dict[str, Any] = {
        "ours": keys["ours"],
        "baseline": keys["baseline"],
        **speedups(ours, base),
        # Same weights, same seeds: the losses of both models agree up to attention round-off.
        "max_abs_loss_diff": max(abs(a - b) for a, b in zip(losses["ours"], losses["baseline"], strict=True)),
        "losses": {impl: [round(v, 6) for v in losses[impl]] for impl in IMPLS},
        "shares": {impl: part_shares(parts[impl], stages[keys[impl]]) for impl in IMPLS},
    }
    return stages, comparison


def run_preset(preset: str, args: argparse.Namespace, device: torch.device) -> RunReport:
    """Build one preset and time its step at every requested precision."""
    cfg = bench_model_config(preset, args.image_res)
    load_start = load_average()  # before the run: shows whether the host was busy
    start_time, start = utc_now_iso(), time.perf_counter()
    torch.manual_seed(args.seed)
    master = create_model("pretrain", cfg)
    assert isinstance(master, ALBEFPretrain)
    x = make_inputs(cfg, args.batch_size, args.text_len, args.seed, device)
    batch = ImageTextBatch(image=x.images, text=TokenBatch(x.input_ids, x.attention_mask))
    objective = PretrainObjective(SpecialIds(cfg.text.vocab_size))  # type: ignore[arg-type]  # duck-typed ids
    print(f"[{preset}] built in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    timer = StageTimer(device, warmup=args.warmup)
    stages: dict[str, StageStats] = {}
    comparisons = {}
    for precision in args.precisions:
        new_stages, comparison = run_precision(master, batch, objective, precision, args, timer)
        stages.update(new_stages)
        comparisons[comparison["ours"]] = comparison
        print(f"[{preset}] {precision:8s} speed-up {comparison['speedup']:.3f}", file=sys.stderr)
    return RunReport(
        kind="benchmark",
        task="pretrain",
        dataset="synthetic-inputs",
        model_preset=preset,
        stages=stages,
        memory=timer.peak_memory(),
        environment=collect_environment(
            device, ",".join(args.precisions), args.seed, start_time, time.perf_counter() - start
        ),
        config={
            "args": arguments(args),
            "model": dataclasses.asdict(cfg),
            "optimizer": dataclasses.asdict(OptimConfig()),
        },
        extra={
            "benchmark": "pretrain-step-vs-eager-baseline",
            "baseline": (
                "the same model and weights with eager attention everywhere (MultiHeadAttention.fused=False, "
                "timm Attention.fused_attn=False): a stand-in for the official xbert/vit code"
            ),
            "image_res": cfg.vision.image_res,
            "text_len": args.text_len,
            "text_lengths": x.attention_mask.sum(1).tolist(),
            "queue_size": cfg.queue_size,
            "alpha": args.alpha,
            "load_average_1m": load_start,
            "load_average_1m_end": load_average(),
            "comparisons": comparisons,
        },
    )


# -- report -------------------------------------------------------------------------------------------------
def table(reports: list[RunReport]) -> str:
    """samples/s, p50 step, the split of ours (mean ms), peak memory and the speed-ups."""
    from tabulate import tabulate

    lines = []
    for report in reports:
        for key, row in report.extra["comparisons"].items():
            ours, base = report.stages[row["ours"]], report.stages[row["baseline"]]
            split = [report.stages[key.replace(STEP, f"{STEP}.{p}", 1)].latency_batch.mean_ms for p in PARTS]
            peak = "-" if ours.peak_memory_mib is None else f"{ours.peak_memory_mib:.0f}"
            if ours.peak_memory_mib is None and report.memory is not None:
                peak = f"{report.memory.mib:.0f} (process)"
            lines.append(
                [
                    (report.model_preset or "").removeprefix("albef_"),
                    ours.precision,
                    f"{ours.items_per_s:.2f}",
                    f"{base.items_per_s:.2f}",
                    f"{row['speedup']:.2f}x",
                    f"{row['speedup_p50']:.2f}x",
                    f"{ours.latency_batch.p50_ms:.1f}",
                    f"{ours.latency_batch.p95_ms:.1f}",
                    " / ".join(f"{ms:.1f}" for ms in split),
                    peak,
                    f"{row['max_abs_loss_diff']:.1e}",
                ]
            )
    headers = [
        "preset",
        "precision",
        "ours samples/s",
        "base samples/s",
        "speed-up",
        "p50 speed-up",
        "ours p50 ms",
        "ours p95 ms",
        "ours fwd / bwd / opt / mom / queue ms",
        "peak MiB",
        "max |loss diff|",
    ]
    return tabulate(lines, headers=headers, tablefmt="github")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--presets", type=csv_list(), default=["tiny", "base"], help="e.g. tiny,base")
    parser.add_argument(
        "--precisions", type=csv_list(), default=["fp32", "amp_bf16"], help="fp32, amp_bf16, ..."
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-res", type=int, default=None, help="default: the preset's image_res")
    parser.add_argument("--text-len", type=int, default=30, help="padded text length L")
    parser.add_argument("--alpha", type=float, default=0.4, help="distillation weight")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--out",
        default="reports/pretrain-bench/pretrain-{preset}-{device}.json",
        help="output path; {preset} and {device} are filled in (needed when several presets run)",
    )
    args = parser.parse_args(argv)
    for p in args.precisions:
        resolve_precision(p, torch.device(args.device))
    if args.iters < 1:
        parser.error("--iters must be at least 1")
    if len(args.presets) > 1 and "{preset}" not in args.out:
        parser.error("--out needs a {preset} field when several presets run")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_presets(parse_args(argv), run_preset, resolve_preset_name, table)


if __name__ == "__main__":
    sys.exit(main())
