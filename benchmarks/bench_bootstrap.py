"""The cost of bootstrap intervals on a COCO-5k-sized retrieval evaluation.

A 5,000 x 25,000 score matrix (five captions per image, the COCO Karpathy test split's shape) with noisy
planted matches. Timed in one run:

- ``ranks + recalls``: the point metrics alone (``retrieval_metrics``), what an evaluation costs without
  intervals;
- ``ranks + recalls + intervals``: ``retrieval_metric_objects``, what an evaluation writes now (1,000
  resamples, images resampled with their captions);
- ``intervals alone``: the vectorised bootstrap (``retrieval_intervals``) on the ranks;
- ``loop baseline``: the same bootstrap written the plain way, one Python iteration per resample (draw the
  images, gather their captions, recompute the nine recalls), timed on ``--loop-resamples`` resamples and
  scaled to 1,000. It does the same work per resample as the vectorised version; the run checks that both
  give the same replicate values on those resamples.

    .venv/bin/python benchmarks/bench_bootstrap.py        # -> reports/bench/bootstrap.{json,md}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tabulate import tabulate

from albef.data.records import RetrievalEvalSet
from albef.evaluation.bootstrap import DEFAULT_RESAMPLES, resample_counts, retrieval_intervals
from albef.evaluation.metrics import retrieval_metric_objects, retrieval_metrics, retrieval_ranks
from albef.reporting.environment import cpu_model, git_revision

REPO_ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def loop_recalls(
    img_ranks: torch.Tensor, txt_ranks: torch.Tensor, owner: torch.Tensor, images: torch.Tensor
) -> list[float]:
    """The nine recall keys of one resample of ``images``, the plain way."""
    captions = torch.cat([torch.nonzero(owner == int(i)).flatten() for i in images])
    txt = [100 * float((img_ranks[images] < k).double().mean()) for k in (1, 5, 10)]
    img = [100 * float((txt_ranks[captions] < k).double().mean()) for k in (1, 5, 10)]
    t, i = sum(txt) / 3, sum(img) / 3
    return [*txt, t, *img, i, (t + i) / 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--loop-resamples", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "bench")
    args = parser.parse_args(argv)
    revision = git_revision()
    n_img, per = args.images, args.captions_per_image
    n_txt = n_img * per
    generator = torch.Generator().manual_seed(0)
    txt2img = torch.arange(n_txt) // per
    scores = torch.randn(n_img, n_txt, generator=generator)
    scores[txt2img, torch.arange(n_txt)] += 3.0
    split = RetrievalEvalSet(
        images=[f"{i}.jpg" for i in range(n_img)],
        texts=["x"] * n_txt,
        img2txt=[list(range(i * per, (i + 1) * per)) for i in range(n_img)],
        txt2img=txt2img.tolist(),
    )
    scores_t2i = scores.T.contiguous()
    img_ranks, txt_ranks = retrieval_ranks(scores, scores_t2i, split.img2txt, split.txt2img)
    point = timed(lambda: retrieval_metrics(scores, scores_t2i, split.img2txt, split.txt2img))
    full = timed(lambda: retrieval_metric_objects(scores, scores_t2i, split))
    alone = timed(lambda: retrieval_intervals(img_ranks, txt_ranks, txt2img))

    # The loop baseline on the first resamples of the same generator stream: identical replicates.
    stream = torch.Generator().manual_seed(0)
    draws = torch.randint(0, n_img, (args.loop_resamples, n_img), generator=stream)
    start = time.perf_counter()
    loop = [loop_recalls(img_ranks, txt_ranks, txt2img, row) for row in draws]
    loop_s = (time.perf_counter() - start) / args.loop_resamples * DEFAULT_RESAMPLES
    counts = next(resample_counts(n_img, args.loop_resamples, torch.Generator().manual_seed(0)))
    assert torch.equal(counts, torch.stack([torch.bincount(r, minlength=n_img).double() for r in draws]))
    hits = torch.stack([(img_ranks < k).double() for k in (1, 5, 10)], dim=1)
    vector_txt = 100 * (counts @ hits) / n_img
    assert torch.allclose(vector_txt, torch.tensor([row[:3] for row in loop], dtype=torch.float64), atol=1e-9)

    rows = [
        ("ranks + recalls (no intervals)", point),
        ("ranks + recalls + intervals (what evaluations write)", full),
        (f"intervals alone, vectorised ({DEFAULT_RESAMPLES} resamples)", alone),
        (f"intervals alone, loop baseline (scaled from {args.loop_resamples})", loop_s),
    ]
    table = tabulate([(name, f"{s:.3f}") for name, s in rows], headers=("step", "seconds"))
    print(f"{n_img} images x {n_txt} captions, {torch.get_num_threads()} threads\n{table}")
    print(
        f"intervals add {full - point:.3f} s; the loop would take {loop_s / alone:.0f}x the vectorised time"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "revision": revision,
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "images": n_img,
        "captions": n_txt,
        "seconds": dict(rows),
    }
    (args.out / "bootstrap.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    md = (
        f"# Bootstrap intervals on a COCO-5k-sized split\n\nRevision `{revision}`, {cpu_model()}, "
        f"{torch.get_num_threads()} threads; {n_img} images x {n_txt} captions; written by "
        f"`benchmarks/bench_bootstrap.py`.\n\n{tabulate([(n, f'{s:.3f}') for n, s in rows], headers=('step', 'seconds'), tablefmt='github')}\n"
    )
    (args.out / "bootstrap.md").write_text(md, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
