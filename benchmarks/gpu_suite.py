"""The GPU suite: one prepared run (at most about 8 minutes on one CUDA GPU) that writes run reports to
``reports/gpu/``.

What it measures, base preset at 384 px (the finetuning resolution), fp32 and bf16:

1. ``albef bench model``: image / text / fusion throughput and the ITM re-rank stage (pairs/s), with FLOPs,
   TFLOP/s, MFU and peak memory, at batch sizes 1, 32 and 128, in fp32, ``amp_bf16`` (what the evaluators run)
   and ``cast_bf16`` (bf16 weights).
2. Our re-ranker (:class:`albef.evaluation.pair_scorer.PairScorer`, what ``albef evaluate retrieval`` runs)
   against the official one-query loop (``benchmarks/bench_rerank.py``) at k = 16 and k = 256, with the
   features kept on the host (moved per call, as the evaluator does) and on the device.
3. VQA answer ranking: questions/s of ``ALBEFVQA.rank_answers`` over a 3,128-answer list with k = 128 (the
   official protocol), random weights.
4. A few pretraining steps (``benchmarks/bench_pretrain.py``): samples/s and the forward / backward /
   optimizer / momentum / queue split against the eager baseline step.

Every part writes a run report JSON and, the moment it finishes, its rendered Markdown; a part that fails or
runs past ``--timeout`` is recorded and the others still run. ``suite.json`` lists every part with its
status, time and report. ``--smoke`` shrinks everything (tiny preset, tiny batches, one timed call) so that
the suite itself is tested on a CPU::

    .venv/bin/python benchmarks/gpu_suite.py                 # on the GPU machine
    .venv/bin/python benchmarks/gpu_suite.py --smoke --device cpu --out /tmp/gpu-smoke
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

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
    rerank_images: int
    rerank_ks: tuple[int, ...]
    rerank_queries: tuple[int, int]
    """Image and text queries timed per re-rank run."""


FULL = SuiteSize("albef_base", 384, "1,32,128", 3, 20, 64, 3128, 128, 32, 8, 256, (16, 256), (16, 48))
SMOKE = SuiteSize("albef_tiny", 32, "1,2", 1, 1, 4, 20, 4, 2, 1, 8, (4,), (2, 4))


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
        "fp32,amp_bf16,cast_bf16",
    ]
    command += ["--warmup", str(size.warmup), "--iters", str(size.iters), "--out", str(path), "--quiet"]
    _run(command, timeout_s)
    return path


def bench_rerank(size: SuiteSize, device: str, out: Path, timeout_s: float, k: int, features: str) -> Path:
    """Our re-ranker against the official one-query loop at ``k``, features on the host or the device."""
    preset = size.preset.removeprefix("albef_")
    path = out / f"rerank-{size.preset}-{size.image_res}-k{k}-{features}-{device.split(':')[0]}.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_rerank.py"), "--presets", preset]
    command += ["--device", device, "--features", features, "--image-res", str(size.image_res)]
    command += ["--images", str(size.rerank_images), "--k", str(k), "--repeats", "2"]
    command += ["--image-queries", str(size.rerank_queries[0]), "--text-queries", str(size.rerank_queries[1])]
    command += ["--out", str(path)]
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
    from albef.evaluation.vqa import DEFAULT_RANK_CHUNK
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
                    model.rank_answers(
                        states, question_mask, answer_ids, answer_mask, k=size.k, pad_id=0,
                        chunk_size=DEFAULT_RANK_CHUNK,  # as the evaluator: no multi-GB spike of one call
                    )  # fmt: skip
    report.stages.update(timer.stats())
    report.memory = timer.peak_memory()
    report.config = {
        "rank_chunk_size": DEFAULT_RANK_CHUNK,
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
    parts: list[tuple[str, Callable[[], Path]]] = [
        ("model", lambda: bench_model(size, args.device, args.out, args.timeout)),
    ]
    for k in size.rerank_ks:
        for features in ("host", "device"):
            parts.append(
                (
                    f"rerank-k{k}-{features}",
                    partial(bench_rerank, size, args.device, args.out, args.timeout, k, features),
                )
            )
    parts += [
        ("vqa_ranking", lambda: bench_vqa_ranking(size, args.device, args.out)),
        ("pretrain", lambda: bench_pretrain(size, args.device, args.out, args.timeout)),
    ]
    results = run_parts(parts, args.out)
    failed = [r["part"] for r in results if r["status"] != "ok"]
    print(
        f"gpu suite: {len(results) - len(failed)} of {len(results)} parts, reports in {args.out}"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def run_parts(parts: list[tuple[str, Callable[[], Path]]], out: Path) -> list[dict[str, Any]]:
    """Run each part, render its report at once, and record every part's outcome in ``suite.json`` after each
    (a failure or a timeout is recorded with its message; the next part still runs)."""
    from albef.fileio import atomic_write_json

    results: list[dict[str, Any]] = []
    for name, part in parts:
        tic = time.perf_counter()
        record: dict[str, Any] = {"part": name}
        try:
            path = part()
            render_report(path)
            record.update(status="ok", report=str(path))
        except subprocess.TimeoutExpired as err:
            record.update(status="timeout", error=f"ran past {err.timeout:.0f} s")
        except Exception as err:
            record.update(status="failed", error=f"{type(err).__name__}: {str(err)[-2000:]}")
        record["seconds"] = round(time.perf_counter() - tic, 1)
        results.append(record)
        print(f"[{record['status']}] {name} ({record['seconds']} s)", flush=True)
        atomic_write_json(out / "suite.json", {"parts": results})
    return results


def render_report(path: Path) -> None:
    """The report's Markdown, tables and plots beside it (``<report>/``)."""
    _run(
        [sys.executable, "-m", "albef", "report", "render", str(path), "--out", str(path.with_suffix(""))],
        120,
    )


if __name__ == "__main__":
    sys.exit(main())
