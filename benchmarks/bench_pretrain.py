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
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from _common import (
    environment,
    load_average,
    peak_memory_mib,
    percentile,
    reset_peak_memory,
    run_presets,
    summarise,
    synchronize,
)
from bench_model import make_inputs, resolve_preset

from albef.config.schema import OptimConfig
from albef.data.collate import ImageTextBatch
from albef.data.tokenizer import TokenBatch
from albef.engine.optim import build_optimizer
from albef.engine.precision import Precision, resolve_precision
from albef.models.albef import ALBEFPretrain
from albef.models.bert import MultiHeadAttention
from albef.models.builders import create_model, model_preset
from albef.tasks.pretrain import PretrainObjective

IMPLS = ("ours", "baseline")
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
        """Time the block into ``part``, the device synchronised on both sides."""
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start


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
def part_stats(samples: list[dict[str, float]], step_total_s: float) -> dict[str, dict[str, float]]:
    """Per part: mean and p50 in ms, and the share of the total step time."""
    out = {}
    for part in PARTS:
        ms = [s[part] * 1000.0 for s in samples]
        out[part] = {
            "mean_ms": statistics.fmean(ms),
            "p50_ms": percentile(ms, 50),
            "share": sum(ms) / 1000.0 / step_total_s,
        }
    return out


def run_precision(
    master: ALBEFPretrain,
    batch: ImageTextBatch,
    objective: PretrainObjective,
    precision_name: str,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Train fresh copies of ``master`` (ours, eager baseline) step by step, interleaved ABBA."""
    precision = resolve_precision(precision_name, device)
    if precision.grad_scaler() is not None:
        raise ValueError(f"{precision_name}: fp16 with a GradScaler is not supported here; use amp_bf16")
    trainees = {
        "ours": make_trainee(copy.deepcopy(master), device),
        "baseline": make_trainee(make_eager(copy.deepcopy(master)), device),
    }
    steps: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    parts: dict[str, list[dict[str, float]]] = {impl: [] for impl in IMPLS}
    losses: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    peaks = dict.fromkeys(IMPLS, 0.0)
    last = dict.fromkeys(IMPLS, 0.0)
    for i in range(args.warmup + args.iters):
        for impl in IMPLS if i % 2 == 0 else IMPLS[::-1]:
            torch.manual_seed(args.seed + i)  # same dropout, negatives and masks for both
            reset_peak_memory(device)
            synchronize(device)
            start = time.perf_counter()
            split, loss = train_step(trainees[impl], objective, batch, precision, args.alpha)
            synchronize(device)
            elapsed = time.perf_counter() - start
            losses[impl].append(loss)
            last[impl] = elapsed
            if i >= args.warmup:
                steps[impl].append(elapsed)
                parts[impl].append(split)
                peaks[impl] = max(peaks[impl], peak_memory_mib(device)[1])
        print(
            f"  step {i + 1}/{args.warmup + args.iters}: "
            + ", ".join(f"{impl} {last[impl]:.2f}s" for impl in IMPLS),
            file=sys.stderr,
        )
    stats = {impl: summarise(steps[impl], args.batch_size) for impl in IMPLS}
    row: dict[str, Any] = {
        "precision": precision_name,
        "speedup": stats["ours"].items_per_s / stats["baseline"].items_per_s,
        "speedup_p50": stats["baseline"].p50_ms / stats["ours"].p50_ms,
        # Same weights, same seeds: the losses of both models agree up to attention round-off.
        "max_abs_loss_diff": max(abs(a - b) for a, b in zip(losses["ours"], losses["baseline"], strict=True)),
        "memory_kind": peak_memory_mib(device)[0],
    }
    for impl in IMPLS:
        row[impl] = {
            **stats[impl].to_dict(),
            "split": part_stats(parts[impl], sum(steps[impl])),
            "losses": [round(v, 6) for v in losses[impl]],
            "peak_memory_mib": round(peaks[impl], 1),
        }
    return row


def run_preset(preset: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Build one preset and time its step at every requested precision."""
    cfg = model_preset(preset)
    res = args.image_res or cfg.vision.image_res
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, image_res=res))
    env = environment(device)  # before the run: the load average shows whether the host was busy
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    master = create_model("pretrain", cfg)
    assert isinstance(master, ALBEFPretrain)
    x = make_inputs(cfg, args.batch_size, args.text_len, args.seed, device)
    batch = ImageTextBatch(image=x.images, text=TokenBatch(x.input_ids, x.attention_mask))
    objective = PretrainObjective(SpecialIds(cfg.text.vocab_size))  # type: ignore[arg-type]  # duck-typed ids
    print(f"[{preset}] built in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    rows = []
    for precision in args.precisions:
        row = run_precision(master, batch, objective, precision, args, device)
        print(f"[{preset}] {precision:8s} speed-up {row['speedup']:.3f}", file=sys.stderr)
        rows.append(row)
    return {
        "benchmark": "pretrain-step",
        "preset": preset,
        "device": str(device),
        "batch_size": args.batch_size,
        "image_res": res,
        "text_len": args.text_len,
        "text_lengths": x.attention_mask.sum(1).tolist(),
        "queue_size": cfg.queue_size,
        "alpha": args.alpha,
        "warmup": args.warmup,
        "iters": args.iters,
        "seed": args.seed,
        "optimizer": dataclasses.asdict(OptimConfig()),
        "baseline": (
            "the same model and weights with eager attention everywhere (MultiHeadAttention.fused=False, "
            "timm Attention.fused_attn=False): a stand-in for the official xbert/vit code"
        ),
        "environment": env,
        "load_average_1m_end": load_average(),
        "model_config": dataclasses.asdict(cfg),
        "results": rows,
    }


# -- report -------------------------------------------------------------------------------------------------
def table(records: list[dict[str, Any]]) -> str:
    """samples/s, p50 step, the split of ours (mean ms), peak memory and the speed-ups."""
    from tabulate import tabulate

    lines = []
    for rec in records:
        for row in rec["results"]:
            ours, base = row["ours"], row["baseline"]
            lines.append(
                [
                    rec["preset"].removeprefix("albef_"),
                    row["precision"],
                    f"{ours['items_per_s']:.2f}",
                    f"{base['items_per_s']:.2f}",
                    f"{row['speedup']:.2f}x",
                    f"{row['speedup_p50']:.2f}x",
                    f"{ours['p50_ms']:.1f}",
                    f"{ours['p95_ms']:.1f}",
                    " / ".join(f"{ours['split'][p]['mean_ms']:.1f}" for p in PARTS),
                    f"{ours['peak_memory_mib']:.0f}",
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
    def csv(text: str) -> list[str]:
        return [v.strip() for v in text.split(",") if v.strip()]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--presets", type=csv, default=["tiny", "base"], help="e.g. tiny,base")
    parser.add_argument("--precisions", type=csv, default=["fp32", "amp_bf16"], help="fp32, amp_bf16, ...")
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
    return run_presets(parse_args(argv), run_preset, resolve_preset, table)


if __name__ == "__main__":
    sys.exit(main())
