"""The GPU suite: one prepared run (at most about 8 minutes on one CUDA GPU) that writes run reports to
``reports/gpu/``.

What it measures, base preset at 384 px (the finetuning resolution), fp32 and bf16:

1. ``albef bench model``: image / text / fusion throughput and the ITM re-rank stage (pairs/s), with FLOPs,
   TFLOP/s, MFU and peak memory, at batch sizes 1, 32 and 128.
2. VQA answer ranking: questions/s of ``ALBEFVQA.rank_answers`` over a 3,128-answer list with k = 128 (the
   official protocol), random weights.
3. A few pretraining steps (``benchmarks/bench_pretrain.py``): samples/s and the forward / backward /
   optimizer / momentum / queue split against the eager baseline step.

Every part writes a run report JSON and its rendered Markdown. ``--smoke`` shrinks everything (tiny preset,
tiny batches, one timed call) so that the suite itself is tested on a CPU::

    .venv/bin/python benchmarks/gpu_suite.py                 # on the GPU machine
    .venv/bin/python benchmarks/gpu_suite.py --smoke --device cpu --out /tmp/gpu-smoke
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SuiteSize:
    """The knobs that ``--smoke`` shrinks."""

    preset: str
    image_res: int
    batch_sizes: str
    warmup: int
    iters: int
    questions: int
    answers: int
    k: int
    pretrain_batch: int
    pretrain_iters: int


FULL = SuiteSize("albef_base", 384, "1,32,128", 3, 20, 64, 3128, 128, 32, 8)
SMOKE = SuiteSize("albef_tiny", 32, "1,2", 1, 1, 4, 20, 4, 2, 1)


def _run(command: list[str], timeout_s: float) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, timeout=timeout_s, cwd=REPO_ROOT)


def bench_model(size: SuiteSize, device: str, out: Path, timeout_s: float) -> Path:
    """Model stages and the ITM re-rank through ``albef bench model``."""
    path = out / f"model-{size.preset}-{size.image_res}-{device.split(':')[0]}.json"
    command = [sys.executable, "-m", "albef", "bench", "model", "--preset", size.preset, "--device", device]
    command += [
        "--image-res",
        str(size.image_res),
        "--batch-sizes",
        size.batch_sizes,
        "--precision",
        "fp32,cast_bf16",
    ]
    command += ["--warmup", str(size.warmup), "--iters", str(size.iters), "--out", str(path), "--quiet"]
    _run(command, timeout_s)
    return path


def bench_pretrain(size: SuiteSize, device: str, out: Path, timeout_s: float) -> Path:
    """A few pretraining steps against the eager baseline."""
    path = out / f"pretrain-{size.preset}-{size.image_res}-{device.split(':')[0]}.json"
    preset = size.preset.removeprefix("albef_")
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_pretrain.py"), "--presets", preset]
    command += ["--precisions", "fp32,amp_bf16", "--device", device, "--image-res", str(size.image_res)]
    command += [
        "--batch-size",
        str(size.pretrain_batch),
        "--warmup",
        "1",
        "--iters",
        str(size.pretrain_iters),
    ]
    command += ["--out", str(path)]
    _run(command, timeout_s)
    return path


def bench_vqa_ranking(size: SuiteSize, device: str, out: Path) -> Path:
    """Questions/s of answer-list ranking (official scoring) in fp32 and bf16 autocast, random weights."""
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
    for precision, dtype in (("fp32", None), ("amp_bf16", torch.bfloat16)):
        autocast = torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)
        with torch.inference_mode(), autocast:
            states = model.encode_question(images, question_ids, question_mask)
            for _ in range(size.warmup + size.iters):
                with timer.stage(f"answer_ranking/{precision}", items=size.questions, item="question"):
                    model.rank_answers(states, question_mask, answer_ids, answer_mask, k=size.k, pad_id=0)
    report.stages.update(timer.stats())
    report.memory = timer.peak_memory()
    report.config = {
        "questions": size.questions,
        "answers": size.answers,
        "k": size.k,
        "image_res": size.image_res,
    }
    report.environment = collect_environment(dev, "fp32,amp_bf16", 0, start, time.perf_counter() - tic)
    return report.save(out / f"vqa-ranking-{size.preset}-{size.image_res}-{dev.type}.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "gpu", help="report folder")
    parser.add_argument("--smoke", action="store_true", help="tiny preset and sizes: test the suite on a CPU")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds allowed per part (default 240)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --device cpu (with --smoke to keep it short)")
    size = SMOKE if args.smoke else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    reports = [
        bench_model(size, args.device, args.out, args.timeout),
        bench_vqa_ranking(size, args.device, args.out),
        bench_pretrain(size, args.device, args.out, args.timeout),
    ]
    for path in reports:
        _run(
            [
                sys.executable,
                "-m",
                "albef",
                "report",
                "render",
                str(path),
                "--out",
                str(path.with_suffix("")),
            ],
            120,
        )
    print(f"gpu suite: {len(reports)} reports in {args.out} ({time.perf_counter() - tic:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
