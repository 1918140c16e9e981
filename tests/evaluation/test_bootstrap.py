"""Bootstrap intervals: equal to an explicit resampling loop, seeded, the right units, known widths."""

from __future__ import annotations

import math

import pytest
import torch

from albef.evaluation.bootstrap import (
    Interval,
    mean_intervals,
    percent_metric,
    percentile_intervals,
    ratio_intervals,
    resample_counts,
    retrieval_intervals,
)
from albef.evaluation.metrics import retrieval_metrics, retrieval_ranks


def loop_draws(n: int, resamples: int, seed: int) -> list[torch.Tensor]:
    """The item indices of each resample, drawn from the same generator stream as ``resample_counts``."""
    generator = torch.Generator().manual_seed(seed)
    return [row for chunk in _index_chunks(n, resamples, generator) for row in chunk]


def _index_chunks(n: int, resamples: int, generator: torch.Generator) -> list[torch.Tensor]:
    from albef.evaluation.bootstrap import CHUNK_ELEMENTS

    per_chunk = max(1, CHUNK_ELEMENTS // n)
    return [
        torch.randint(0, n, (min(per_chunk, resamples - start), n), generator=generator)
        for start in range(0, resamples, per_chunk)
    ]


def quantiles(values: list[float]) -> tuple[float, float]:
    table = torch.tensor(values, dtype=torch.float64)
    low, high = torch.quantile(table, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return low, high


def test_counts_are_the_draws_of_each_resample() -> None:
    generator = torch.Generator().manual_seed(3)
    (counts,) = list(resample_counts(7, 5, generator))
    draws = loop_draws(7, 5, 3)
    assert counts.shape == (5, 7) and torch.equal(
        counts.sum(dim=1), torch.full((5,), 7.0, dtype=torch.float64)
    )
    for row, drawn in zip(counts, draws, strict=True):
        assert torch.equal(row, torch.bincount(drawn, minlength=7).double())


def test_mean_interval_equals_an_explicit_resampling_loop() -> None:
    values = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]) * 100
    (interval,) = mean_intervals(values, resamples=500, seed=11)
    means = [float(values[idx].double().mean()) for idx in loop_draws(len(values), 500, 11)]
    low, high = quantiles(means)
    assert interval.n == 12
    assert interval.low == pytest.approx(low, abs=1e-9) and interval.high == pytest.approx(high, abs=1e-9)


def test_intervals_are_seeded_and_chunking_does_not_change_them(monkeypatch: pytest.MonkeyPatch) -> None:
    values = torch.rand(300, generator=torch.Generator().manual_seed(0))
    first = mean_intervals(values, seed=5)
    assert mean_intervals(values, seed=5) == first
    assert mean_intervals(values, seed=6) != first
    monkeypatch.setattr("albef.evaluation.bootstrap.CHUNK_ELEMENTS", 300 * 7)  # 7 resamples a chunk
    chunked = mean_intervals(values, seed=5)
    assert chunked[0].low == pytest.approx(first[0].low, abs=1e-12)
    assert chunked[0].high == pytest.approx(first[0].high, abs=1e-12)


def test_a_constant_outcome_has_a_zero_width_interval() -> None:
    (interval,) = mean_intervals(torch.full((50,), 100.0))
    assert (interval.low, interval.high, interval.half_width) == (100.0, 100.0, 0.0)


def test_interval_width_matches_the_binomial_standard_error() -> None:
    # 400 coin flips at p = 0.5: the 95 % interval of the mean is +- 1.96 * sqrt(p (1 - p) / n) = +- 4.9 points.
    values = torch.tensor([100.0, 0.0]).repeat(200)
    (interval,) = mean_intervals(values, resamples=2000)
    expected = 1.96 * math.sqrt(0.25 / 400) * 100
    assert interval.half_width == pytest.approx(expected, rel=0.1)
    assert interval.low < 50.0 < interval.high


def test_columns_are_independent_metrics() -> None:
    table = torch.stack([torch.full((40,), 100.0), torch.tensor([100.0, 0.0]).repeat(20)], dim=1)
    constant, mixed = mean_intervals(table)
    assert constant.half_width == 0.0 and mixed.half_width > 5


def test_ratio_interval_equals_a_loop_over_clusters() -> None:
    hits = torch.tensor([3.0, 0.0, 5.0, 1.0, 2.0, 4.0], dtype=torch.float64)
    sizes = torch.tensor([5.0, 5.0, 5.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    (interval,) = ratio_intervals(hits, sizes, resamples=400, seed=2)
    ratios = [float(hits[idx].sum() / sizes[idx].sum()) for idx in loop_draws(6, 400, 2)]
    low, high = quantiles(ratios)
    assert interval.n == 6
    assert interval.low == pytest.approx(low, abs=1e-9) and interval.high == pytest.approx(high, abs=1e-9)


def test_percentile_level_is_checked() -> None:
    with pytest.raises(ValueError, match="level"):
        percentile_intervals(torch.zeros(10, 1), 10, level=1.0)


def retrieval_case(seed: int = 0) -> tuple[torch.Tensor, list[list[int]], list[int]]:
    """Eight images with 1-3 captions each and noisy scores that rank some captions right."""
    txt2img = [0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 6, 6, 7]
    img2txt = [[t for t, i in enumerate(txt2img) if i == image] for image in range(8)]
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(8, len(txt2img), generator=generator)
    for t, image in enumerate(txt2img):
        scores[image, t] += 1.5
    return scores, img2txt, txt2img


def test_retrieval_interval_resamples_images_with_their_captions() -> None:
    scores, img2txt, txt2img = retrieval_case()
    img_ranks, txt_ranks = retrieval_ranks(scores, scores.T, img2txt, txt2img)
    intervals = retrieval_intervals(img_ranks, txt_ranks, txt2img, resamples=300, seed=4)
    owner = torch.tensor(txt2img)
    per_draw: dict[str, list[float]] = {"txt_r1": [], "img_r5": [], "r_mean": []}
    for images in loop_draws(8, 300, 4):
        captions = torch.cat([torch.nonzero(owner == int(i)).flatten() for i in images])
        txt = [100 * float((img_ranks[images] < k).double().mean()) for k in (1, 5, 10)]
        img = [100 * float((txt_ranks[captions] < k).double().mean()) for k in (1, 5, 10)]
        per_draw["txt_r1"].append(txt[0])
        per_draw["img_r5"].append(img[1])
        per_draw["r_mean"].append((sum(txt) / 3 + sum(img) / 3) / 2)
    for key, values in per_draw.items():
        low, high = quantiles(values)
        assert intervals[key].low == pytest.approx(low, abs=1e-9), key
        assert intervals[key].high == pytest.approx(high, abs=1e-9), key
    assert intervals["txt_r1"].n == 8 and intervals["img_r1"].n == 13 and intervals["r_mean"].n == 13
    point = retrieval_metrics(scores, scores.T, img2txt, txt2img)
    for key, interval in intervals.items():
        assert interval.low <= point[key] <= interval.high, key


def test_perfect_retrieval_has_no_spread() -> None:
    *_, txt2img = retrieval_case()
    img_ranks, txt_ranks = torch.zeros(8, dtype=torch.long), torch.zeros(13, dtype=torch.long)
    intervals = retrieval_intervals(img_ranks, txt_ranks, txt2img)
    assert all(i == Interval(100.0, 100.0, i.n) for i in intervals.values())


def test_coco_sized_intervals_are_vectorised() -> None:
    # 5,000 images x 25,000 captions (COCO 5k): one matmul per chunk, not a Python loop over resamples.
    img_ranks = torch.randint(0, 50, (5000,), generator=torch.Generator().manual_seed(0))
    txt_ranks = torch.randint(0, 50, (25000,), generator=torch.Generator().manual_seed(1))
    intervals = retrieval_intervals(img_ranks, txt_ranks, torch.arange(25000) // 5)
    # R@10 of ranks uniform in [0, 50) is 20 %; 5,000 images give a half-width near 1.96 * sqrt(.16/5000).
    assert intervals["txt_r10"].low < 20.0 < intervals["txt_r10"].high
    assert intervals["txt_r10"].half_width == pytest.approx(196 * math.sqrt(0.16 / 5000), rel=0.15)


def test_percent_metric_keeps_the_official_value_and_counts_units() -> None:
    metric = percent_metric([1.0, 0.0, 1.0, 1.0], value=75.0, group="class")
    assert (metric.value, metric.n, metric.group) == (75.0, 4, "class")
    assert metric.ci_low is not None and metric.ci_high is not None
    assert metric.ci_low <= 75.0 <= metric.ci_high
    assert percent_metric([0.3, 0.6, 0.9]).value == pytest.approx(60.0)
    empty = percent_metric([])
    assert (empty.value, empty.n, empty.ci_low) == (0.0, 0, None)
