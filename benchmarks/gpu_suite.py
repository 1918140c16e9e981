"""The GPU suite: one prepared run (at most 8 minutes on one H100/H200) that measures the project's own
evaluators and writes its reports to ``reports/gpu/``.

Parts, base preset at 384 px (the finetuning and evaluation resolution):

1. ``machine``: the GPU's clocks, power limit, driver, versions, and the SDPA backend the model actually
   ran in fp32 and under bf16 autocast (``machine.json``).
2. ``flops``: FLOPs per item of every model stage counted on CUDA and on the CPU; they must be equal.
3. ``model`` / ``model-compiled``: ``albef bench model``: image / text / fusion stages and the one-image ITM
   re-rank, items/s, FLOPs, TFLOP/s, MFU, peak memory; fp32, ``amp_bf16`` (what the evaluators run) and
   ``cast_bf16``; then the same under ``torch.compile`` (``runtime.compile``).
4. ``rerank-k{16,256}-{host,device}``: our re-ranker (:class:`albef.evaluation.pair_scorer.PairScorer`, what
   ``albef evaluate retrieval`` runs) against the official one-query loop (``benchmarks/bench_rerank.py``),
   features on the device and staged from host memory.
5. ``vqa_ranking``: answer-list ranking, k = 128 over 3,128 answers, calls cut to the memory budget.
6. ``nlvr``: NLVR² pairs/s (two images, text, fusion, head).
7. ``pretrain``: pretraining steps under fp32 and ``amp_bf16`` against the eager baseline step.
8. ``loader``: the data loader with 0, 4 and 8 workers on real photographs (``benchmarks/bench_loader.py``).

Every part writes its report (rendered to Markdown) the moment it finishes; a part that fails or runs past
its timeout is recorded and the others still run; parts that would start after ``--budget`` seconds are
recorded as skipped. ``suite.json`` lists every part (status, seconds, report) and a summary: the image
encoder's MFU under ``amp_bf16``, re-rank pairs/s and speed-up at k = 256, and the projected time of a
COCO-5k evaluation at k = 256 (5,000 images, 25,010 captions, 7.68 M re-ranked pairs at the measured rates).
``--smoke`` shrinks every part (tiny preset, tiny batches) so that the whole suite runs in the tests on a CPU::

    .venv/bin/python benchmarks/gpu_suite.py                 # on the GPU machine, about 6-8 minutes
    .venv/bin/python benchmarks/gpu_suite.py --smoke --device cpu --out /tmp/gpu-smoke
"""

from __future__ import annotations

import argparse
import json
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
if str(REPO_ROOT / "benchmarks") not in sys.path:  # the in-process parts, also when imported by the tests
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))


@dataclass(frozen=True)
class SuiteSize:
    """The knobs that ``--smoke`` shrinks."""

    preset: str
    image_res: int
    batch_sizes: str
    compile_batch_sizes: str
    warmup: int
    iters: int
    questions: int
    answers: int
    k: int
    nlvr_batch: int
    pretrain_batch: int
    pretrain_iters: int
    rerank_images: int
    rerank_ks: tuple[int, ...]
    rerank_queries: tuple[int, int]
    """Image and text queries timed per re-rank run."""
    loader_images: int
    loader_workers: str


FULL = SuiteSize(
    "albef_base",
    384,
    "1,32,128",
    "128",
    3,
    10,
    64,
    3128,
    128,
    32,
    32,
    8,
    256,
    (16, 256),
    (16, 48),
    256,
    "0,4,8",
)
SMOKE = SuiteSize("albef_tiny", 32, "1,2", "2", 1, 1, 4, 20, 4, 2, 2, 1, 8, (4,), (2, 4), 8, "0,1")
COCO_5K = {"images": 5000, "texts": 25010, "k": 256}
"""The projected evaluation: COCO-5k test at k = 256 (both directions: 7.68 M re-ranked pairs)."""
DEFAULT_BUDGET_S = 420.0
"""Parts that would start after this many seconds are skipped (each part also has its own timeout)."""


def _run(command: list[str], timeout_s: float) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, timeout=timeout_s, cwd=REPO_ROOT)


def bench_model(size: SuiteSize, device: str, out: Path, timeout_s: float, compiled: bool = False) -> Path:
    """Model stages and the ITM re-rank through ``albef bench model`` (``compiled``: under torch.compile,
    amp_bf16 only, at the large batch: each batch size and precision compiles anew)."""
    kind = "compiled" if compiled else "eager"
    path = out / f"model-{size.preset}-{size.image_res}-{kind}-{device.split(':')[0]}.json"
    command = [sys.executable, "-m", "albef", "bench", "model", "--preset", size.preset, "--device", device]
    command += ["--image-res", str(size.image_res)]
    if compiled:
        command += ["--compile", "--batch-sizes", size.compile_batch_sizes, "--precision", "amp_bf16"]
    else:
        command += ["--batch-sizes", size.batch_sizes, "--precision", "fp32,amp_bf16,cast_bf16"]
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
    """A few pretraining steps under fp32 and amp_bf16 against the eager baseline."""
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


def bench_loader(size: SuiteSize, out: Path, timeout_s: float) -> Path:
    """The training loaders with workers, on real photographs (``benchmarks/bench_loader.py``)."""
    folder = out / "loader"
    command = [
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "bench_loader.py"),
        "--images",
        str(size.loader_images),
    ]
    command += ["--passes", "1", "--workers", size.loader_workers, "--out", str(folder)]
    _run(command, timeout_s)
    return folder / "loader.json"


def suite_parts(
    size: SuiteSize, device: str, out: Path, timeout_s: float
) -> list[tuple[str, Callable[[], Path]]]:
    """Every part of the suite, in the order they run (the cheap records first, the long runs last)."""
    import _gpu_parts as gp

    parts: list[tuple[str, Callable[[], Path]]] = [
        ("machine", partial(gp.machine_part, size, device, out)),
        ("flops", partial(gp.flops_part, size, device, out)),
        ("model", partial(bench_model, size, device, out, timeout_s)),
    ]
    for k in size.rerank_ks:
        for features in ("device", "host"):
            parts.append(
                (f"rerank-k{k}-{features}", partial(bench_rerank, size, device, out, timeout_s, k, features))
            )
    parts += [
        ("vqa_ranking", partial(gp.vqa_ranking_part, size, device, out)),
        ("nlvr", partial(gp.nlvr_part, size, device, out)),
        ("pretrain", partial(bench_pretrain, size, device, out, timeout_s)),
        ("loader", partial(bench_loader, size, out, timeout_s)),
        ("model-compiled", partial(bench_model, size, device, out, timeout_s, True)),
    ]
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "gpu", help="report folder")
    parser.add_argument("--smoke", action="store_true", help="tiny preset and sizes: test the suite on a CPU")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per part (default 180)")
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        help=f"seconds after which no part starts ({DEFAULT_BUDGET_S:.0f})",
    )
    parser.add_argument("--parts", default=None, help="comma list of part names to run (default: all)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --device cpu (with --smoke to keep it short)")
    size = SMOKE if args.smoke else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    parts = suite_parts(size, args.device, args.out, args.timeout)
    if args.parts:
        wanted = set(args.parts.split(","))
        unknown = wanted - {name for name, _ in parts}
        if unknown:
            parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
        parts = [(name, fn) for name, fn in parts if name in wanted]
    results = run_parts(parts, args.out, args.budget)
    failed = [r["part"] for r in results if r["status"] != "ok"]
    summary = summarise(results)
    from albef.fileio import atomic_write_json

    atomic_write_json(args.out / "suite.json", {"parts": results, "summary": summary})
    print(json.dumps(summary, indent=2))
    print(
        f"gpu suite: {len(results) - len(failed)} of {len(results)} parts ok, reports in {args.out}"
        + (f"; not ok: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def run_parts(
    parts: list[tuple[str, Callable[[], Path]]], out: Path, budget_s: float = float("inf")
) -> list[dict[str, Any]]:
    """Run each part, render its report at once, and record every part's outcome in ``suite.json`` after each
    (a failure or a timeout is recorded with its message and the next part still runs; a part that would
    start after ``budget_s`` seconds is recorded as skipped)."""
    from albef.fileio import atomic_write_json

    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    for name, part in parts:
        tic = time.perf_counter()
        record: dict[str, Any] = {"part": name}
        if tic - start > budget_s:
            record.update(status="skipped", error=f"the suite's budget of {budget_s:.0f} s was spent")
        else:
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
    """A run report's Markdown, tables and plots beside it (``<report>/``); other JSON records are left as they
    are (the machine record, the FLOP check, the loader's own Markdown)."""
    if json.loads(path.read_text(encoding="utf-8")).get("kind") is None:
        return
    _run(
        [sys.executable, "-m", "albef", "report", "render", str(path), "--out", str(path.with_suffix(""))],
        120,
    )


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline figures of the parts that ran: the image encoder's MFU under amp_bf16, the re-rank at the
    largest k (pairs/s, speed-up over the one-query loop) and the projected COCO-5k evaluation time."""
    from albef.reporting.schema import RunReport

    reports = {
        r["part"]: RunReport.load(r["report"]) for r in results if r["status"] == "ok" and _is_run_report(r)
    }
    summary: dict[str, Any] = {}
    model = reports.get("model")
    if model is not None:
        encoders = {}
        for stage in ("image_encode", "text_encode"):
            best = max(
                (s for key, s in model.stages.items() if key.startswith(f"{stage}/amp_bf16/")),
                key=lambda s: s.items_per_s,
                default=None,
            )
            if best is not None:
                encoders[stage] = {
                    "items_per_s": best.items_per_s,
                    "batch_size": best.batch_size,
                    "mfu": best.mfu,
                }
        summary["encoders_amp_bf16"] = encoders
    reranks = sorted(
        (name for name in reports if name.startswith("rerank-") and name.endswith("-device")),
        key=lambda name: int(name.split("-k")[1].split("-")[0]),
    )
    if reranks:
        report = reports[reranks[-1]]
        ours = [s for key, s in report.stages.items() if key.endswith("/ours")]
        pairs = sum(s.items for s in ours)
        seconds = sum(s.items / s.items_per_s for s in ours)
        summary["rerank"] = {
            "part": reranks[-1],
            "pairs_per_s": pairs / seconds,
            "speedup_over_one_query_loop": report.extra["speedup"],
        }
        encoders = summary.get("encoders_amp_bf16", {})
        if {"image_encode", "text_encode"} <= set(encoders):
            pairs_5k = (COCO_5K["images"] + COCO_5K["texts"]) * COCO_5K["k"]
            parts = {
                "image_encode": COCO_5K["images"] / encoders["image_encode"]["items_per_s"],
                "text_encode": COCO_5K["texts"] / encoders["text_encode"]["items_per_s"],
                "rerank": pairs_5k / summary["rerank"]["pairs_per_s"],
            }
            summary["coco5k_k256_projection_s"] = {**parts, "total": sum(parts.values()), "pairs": pairs_5k}
    return summary


def _is_run_report(record: dict[str, Any]) -> bool:
    return json.loads(Path(record["report"]).read_text(encoding="utf-8")).get("kind") is not None


if __name__ == "__main__":
    sys.exit(main())
