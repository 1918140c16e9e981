"""The GPU suite's in-process parts: the machine record, the FLOP-count check, VQA answer ranking, NLVR² pairs.

Each part takes the suite's size, the device and the report folder, and returns the path of what it wrote.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from albef.fileio import atomic_write_json

NVIDIA_SMI_FIELDS = (
    "name", "driver_version", "pstate", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
    "power.draw", "power.limit", "power.max_limit", "temperature.gpu", "memory.total", "persistence_mode",
)  # fmt: skip
"""What ``nvidia-smi --query-gpu`` is asked for: the clocks and power limit that bound every timing."""
SDPA_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "mem_efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "cpu_flash",
    "aten::_scaled_dot_product_attention_math": "math",
}
"""The ATen op behind each ``scaled_dot_product_attention`` backend (what the profiler shows was run)."""


def gpu_record(device: torch.device) -> dict[str, Any]:
    """Clocks, power limit, driver and the rest of :data:`NVIDIA_SMI_FIELDS` (``None`` without nvidia-smi)."""
    if device.type != "cuda":
        return {"nvidia_smi": None}
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        line = subprocess.run(
            ["nvidia-smi", f"--id={index}", "--format=csv,noheader,nounits",
             "--query-gpu=" + ",".join(NVIDIA_SMI_FIELDS)],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as err:
        return {"nvidia_smi": None, "error": str(err)}
    return {"nvidia_smi": dict(zip(NVIDIA_SMI_FIELDS, (v.strip() for v in line.split(",")), strict=False))}


def sdpa_backends(model: torch.nn.Module, tokens: torch.Tensor, precision: str) -> list[str]:
    """The attention backends one call of ``model.encode_image`` actually ran (from the profiler's ATen ops)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if tokens.is_cuda else [])
    autocast = torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=precision == "amp_bf16")
    with torch.inference_mode(), autocast, profile(activities=activities) as prof:
        model.encode_image(tokens)  # type: ignore[operator]
    ran = {event.key for event in prof.key_averages()}
    return sorted(name for op, name in SDPA_OPS.items() if op in ran)


def machine_part(size: Any, device: str, out: Path) -> Path:
    """``machine.json``: the GPU's clocks, power limit and driver, versions, and the SDPA backend used per
    precision by the suite's model."""
    from albef.reporting.environment import collect_environment, utc_now_iso
    from albef.workflows.bench import bench_model_config, build_bench_model

    dev = torch.device(device)
    cfg = bench_model_config(size.preset, size.image_res)
    model = build_bench_model(cfg, 0, dev)
    images = torch.randn(2, 3, size.image_res, size.image_res, device=dev)
    record = {
        **gpu_record(dev),
        "sdpa_backend": {p: sdpa_backends(model, images, p) for p in ("fp32", "amp_bf16")},
        "sdpa_flags": {
            name: bool(getattr(torch.backends.cuda, f"{name}_sdp_enabled")())
            for name in ("flash", "mem_efficient", "math", "cudnn")
            if hasattr(torch.backends.cuda, f"{name}_sdp_enabled")
        },
        "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "environment": dataclasses.asdict(collect_environment(dev, "fp32,amp_bf16", 0, utc_now_iso(), 0.0)),
    }
    path = out / "machine.json"
    atomic_write_json(path, record)
    return path


def flops_part(size: Any, device: str, out: Path) -> Path:
    """``flops.json``: FLOPs per item of every model stage counted on ``device`` and on the CPU; a difference
    fails the part (the FLOP counter must see the same operations whichever kernels run them)."""
    from albef.reporting.flops import flops_per_item
    from albef.workflows.bench import bench_model_config, build_bench_model, make_inputs, stage_calls

    cfg = bench_model_config(size.preset, size.image_res)
    counts: dict[str, dict[str, float]] = {}
    for where in dict.fromkeys([device, "cpu"]):
        dev = torch.device(where)
        model = build_bench_model(cfg, 0, dev)
        x = make_inputs(cfg, 2, 30, 0, dev)
        with torch.inference_mode():
            for stage, fn in stage_calls(model, x).items():
                counts.setdefault(stage, {})[where] = flops_per_item(fn, 2)
        del model
    mismatched = {s: c for s, c in counts.items() if len(set(c.values())) != 1}
    path = out / "flops.json"
    atomic_write_json(path, {"preset": size.preset, "image_res": size.image_res, "flops_per_item": counts,
                             "equal": not mismatched})  # fmt: skip
    if mismatched:
        raise AssertionError(f"FLOPs per item differ between {device} and cpu: {json.dumps(mismatched)}")
    return path


def vqa_ranking_part(size: Any, device: str, out: Path) -> Path:
    """Questions/s of answer-list ranking (official scoring, k = ``size.k``) in fp32 and bf16 autocast, decoder
    calls cut to the evaluator's memory budget."""
    from albef.evaluation.memory_plan import call_budget, rank_chunk_rows
    from albef.models import create_model, model_preset
    from albef.reporting.environment import collect_environment, utc_now_iso
    from albef.reporting.measure import StageTimer
    from albef.reporting.schema import RunReport

    torch.manual_seed(0)
    dev = torch.device(device)
    cfg = model_preset(size.preset)
    cfg.vision.image_res = size.image_res
    model = create_model("vqa", cfg).to(dev).eval()
    vocab, width = cfg.text.vocab_size, 8
    answer_ids = torch.randint(1000 % vocab, vocab, (size.answers, width), device=dev)
    answer_ids[:, 0] = 101 % vocab  # [CLS]
    answer_mask = torch.ones_like(answer_ids)
    answer_mask[:, 4:] = torch.rand(size.answers, width - 4, device=dev).lt(0.5).cumprod(dim=1).long()
    answer_ids = answer_ids.masked_fill(answer_mask == 0, 0)
    images = torch.randn(size.questions, 3, size.image_res, size.image_res, device=dev)
    question_ids = torch.randint(1000 % vocab, vocab, (size.questions, 12), device=dev)
    question_mask = torch.ones_like(question_ids)
    report = RunReport(
        kind="benchmark", task="vqa_ranking", dataset="synthetic-inputs", model_preset=size.preset
    )
    start, tic = utc_now_iso(), time.perf_counter()
    timer = StageTimer(dev, warmup=size.warmup)
    budget = call_budget(dev)[0]
    rows = {}
    for precision, dtype in (("fp32", None), ("amp_bf16", torch.bfloat16)):
        rows[precision] = rank_chunk_rows(model, 12, width, budget, 4 if dtype is None else 2, size.k)  # type: ignore[arg-type]
        autocast = torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)
        with torch.inference_mode(), autocast:
            states = model.encode_question(images, question_ids, question_mask)  # type: ignore[operator]
            for _ in range(size.warmup + size.iters):
                with timer.stage(f"answer_ranking/{precision}", items=size.questions, item="question"):
                    model.rank_answers(  # type: ignore[operator]
                        states, question_mask, answer_ids, answer_mask, k=size.k, pad_id=0,
                        chunk_size=rows[precision],
                    )  # fmt: skip
    report.stages.update(timer.stats())
    report.memory = timer.peak_memory()
    report.config = {"rank_budget_mb": budget, "rank_rows_per_call": rows, "questions": size.questions,
                     "answers": size.answers, "k": size.k, "image_res": size.image_res}  # fmt: skip
    report.environment = collect_environment(dev, "fp32,amp_bf16", 0, start, time.perf_counter() - tic)
    return report.save(out / f"vqa-ranking-{size.preset}-{size.image_res}-{dev.type}.json")


def nlvr_part(size: Any, device: str, out: Path) -> Path:
    """Pairs/s of the NLVR² classifier (two images through the ViT, the text, the fusion over both, the head)
    in fp32 and bf16 autocast, as its evaluator runs it."""
    from albef.models import create_model, model_preset
    from albef.reporting.environment import collect_environment, utc_now_iso
    from albef.reporting.measure import StageTimer
    from albef.reporting.schema import RunReport

    torch.manual_seed(0)
    dev = torch.device(device)
    cfg = model_preset(size.preset)
    cfg.vision.image_res = size.image_res
    model = create_model("nlvr", cfg).to(dev).eval()
    batch, res = size.nlvr_batch, size.image_res
    image0, image1 = (torch.randn(batch, 3, res, res, device=dev) for _ in range(2))
    ids = torch.randint(1000 % cfg.text.vocab_size, cfg.text.vocab_size, (batch, 20), device=dev)
    ids[:, 0] = 101 % cfg.text.vocab_size
    mask = torch.ones_like(ids)
    report = RunReport(
        kind="benchmark", task="nlvr_pairs", dataset="synthetic-inputs", model_preset=size.preset
    )
    start, tic = utc_now_iso(), time.perf_counter()
    timer = StageTimer(dev, warmup=size.warmup)
    for precision, dtype in (("fp32", None), ("amp_bf16", torch.bfloat16)):
        autocast = torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)
        with torch.inference_mode(), autocast:
            for _ in range(size.warmup + size.iters):
                with timer.stage(f"nlvr_pairs/{precision}/bs{batch}", items=batch, item="pair"):
                    model.logits(image0, image1, ids, mask)  # type: ignore[operator]
    report.stages.update(timer.stats())
    report.memory = timer.peak_memory()
    report.config = {"batch": batch, "image_res": res, "text_len": 20}
    report.environment = collect_environment(dev, "fp32,amp_bf16", 0, start, time.perf_counter() - tic)
    return report.save(out / f"nlvr-pairs-{size.preset}-{res}-{dev.type}.json")
