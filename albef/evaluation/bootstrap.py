"""Bootstrap confidence intervals over the evaluation unit, vectorised and seeded.

A metric measured on N test items (images, questions, pairs, sentence groups) is a statistic of a sample;
its interval says how far it would move on another sample of the same size. The percentile bootstrap
draws ``resamples`` samples of N items with replacement, recomputes the statistic on each and takes the
2.5 and 97.5 percentiles of the results (for the default 95 %).

Every resample is a row of *counts* (how often each item was drawn), so a statistic that is a ratio of
sums is one matrix product per chunk of resamples: ``counts (b, N) @ values (N, M)``. The chunk bounds
memory to about ``2**24`` counts; a COCO-5k retrieval split (5,000 images, 25,000 captions) takes well
under a second for 1,000 resamples. The generator is seeded (``seed``), so the same inputs give the same
interval on every run.

Units: retrieval resamples **images** and each image carries its captions (a cluster bootstrap: an image
and its five captions are not five independent draws), so text-retrieval recalls are means over the drawn
images and image-retrieval recalls are ratios (hits over the drawn images' captions); VQA resamples
questions, NLVR² and SNLI-VE resample pairs, and NLVR² consistency resamples its sentence groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from albef.reporting.schema import Metric

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
CHUNK_ELEMENTS = 2**24
"""Counts held at once (``resamples_per_chunk * N``)."""

Statistic = Callable[[Tensor], Tensor]
"""``counts (b, N) float64 -> statistics (b, M)``: the metric(s) of ``b`` resamples."""


@dataclass(frozen=True)
class Interval:
    """A percentile-bootstrap interval of one metric, in the metric's units.

    Attributes:
        low: Lower bound.
        high: Upper bound.
        n: Evaluation units the metric was measured on.
    """

    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width (what ``58.8 ± 2.7`` prints)."""
        return (self.high - self.low) / 2


def resample_counts(n: int, resamples: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Counts of ``resamples`` bootstrap draws of ``n`` items, in chunks of shape (b, n), float64."""
    per_chunk = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, resamples, per_chunk):
        b = min(per_chunk, resamples - start)
        draws = torch.randint(0, n, (b, n), generator=generator)
        counts = torch.zeros(b, n, dtype=torch.float64)
        yield counts.scatter_add_(1, draws, torch.ones(b, n, dtype=torch.float64))


def bootstrap(
    statistic: Statistic, n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> Tensor:
    """The statistic on every resample: (resamples, M)."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one evaluation unit")
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([statistic(counts) for counts in resample_counts(n, resamples, generator)])


def percentile_intervals(replicates: Tensor, n: int, level: float = DEFAULT_LEVEL) -> list[Interval]:
    """One :class:`Interval` per column of ``replicates`` (resamples, M)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2
    bounds = torch.quantile(replicates.double(), torch.tensor([tail, 1.0 - tail], dtype=torch.float64), dim=0)
    return [Interval(float(lo), float(hi), n) for lo, hi in bounds.T.tolist()]


def mean_intervals(
    values: Tensor, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL
) -> list[Interval]:
    """Intervals of the column means of ``values`` (N units, M metrics; a 1-D input is one metric).

    Args:
        values: Per-unit values, e.g. 100 x correctness (N,) or (N, M).
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        level: Coverage of the interval.

    Returns:
        One interval per column.
    """
    table = values.double().reshape(values.shape[0], -1)
    n = table.shape[0]
    replicates = bootstrap(lambda counts: counts @ table / n, n, resamples, seed)
    return percentile_intervals(replicates, n, level)


def ratio_intervals(
    numerators: Tensor,
    denominators: Tensor,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> list[Interval]:
    """Intervals of ``sum(numerators[:, m]) / sum(denominators[:, m])`` over resampled units (clusters).

    Args:
        numerators: (N, M) per-unit sums (e.g. hits among an image's captions).
        denominators: (N, M) or (N,) per-unit counts (e.g. the image's number of captions).
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        level: Coverage of the interval.

    Returns:
        One interval per column; ``n`` is the number of units (clusters).
    """
    num = numerators.double().reshape(numerators.shape[0], -1)
    den = denominators.double().reshape(denominators.shape[0], -1).expand_as(num)
    n = num.shape[0]
    replicates = bootstrap(
        lambda counts: (counts @ num) / (counts @ den).clamp_min(1e-12), n, resamples, seed
    )
    return percentile_intervals(replicates, n, level)


def retrieval_intervals(
    img_ranks: Tensor,
    txt_ranks: Tensor,
    txt2img: Tensor | list[int],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Interval]:
    """Intervals of the official recall keys (``txt_r1`` ... ``r_mean``), resampling images with their captions.

    Args:
        img_ranks: (N_images,) 0-based rank of each image's best caption (text retrieval).
        txt_ranks: (N_texts,) 0-based rank of each caption's image (image retrieval).
        txt2img: (N_texts,) the image of each caption.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        level: Coverage of the interval.

    Returns:
        Key -> interval; ``n`` is the number of images for ``txt_*`` and of captions for ``img_*`` and
        ``r_mean`` (the queries each averages over; ``r_mean`` mixes both, its ``n`` counts captions).
    """
    ks = (1, 5, 10)
    owner = torch.as_tensor(txt2img, dtype=torch.long)
    n_img = img_ranks.shape[0]
    image_hits = torch.stack([(img_ranks < k).double() for k in ks], dim=1)  # (N_img, 3)
    text_hits = torch.stack([(txt_ranks < k).double() for k in ks], dim=1)  # (N_txt, 3)
    caption_hits = torch.zeros(n_img, 3, dtype=torch.float64).index_add_(0, owner, text_hits)
    captions = torch.zeros(n_img, 1, dtype=torch.float64).index_add_(
        0, owner, torch.ones(owner.shape[0], 1, dtype=torch.float64)
    )
    table = torch.cat([image_hits, caption_hits, captions], dim=1)  # (N_img, 7)

    def recalls(counts: Tensor) -> Tensor:
        sums = counts @ table
        txt = 100 * sums[:, 0:3] / n_img
        img = 100 * sums[:, 3:6] / sums[:, 6:7]
        txt_mean, img_mean = txt.mean(dim=1, keepdim=True), img.mean(dim=1, keepdim=True)
        return torch.cat([txt, txt_mean, img, img_mean, (txt_mean + img_mean) / 2], dim=1)

    keys = (
        "txt_r1",
        "txt_r5",
        "txt_r10",
        "txt_r_mean",
        "img_r1",
        "img_r5",
        "img_r10",
        "img_r_mean",
        "r_mean",
    )
    intervals = percentile_intervals(bootstrap(recalls, n_img, resamples, seed), n_img, level)
    n_txt = int(owner.shape[0])
    return {
        key: interval if key.startswith("txt_") else Interval(interval.low, interval.high, n_txt)
        for key, interval in zip(keys, intervals, strict=True)
    }


def percent_metric(
    outcomes: Tensor | Sequence[float],
    value: float | None = None,
    group: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Metric:
    """A percentage metric with its sample size and bootstrap interval from per-unit outcomes in [0, 1].

    Args:
        outcomes: (N,) per-unit scores (1/0 correctness, or a VQA question's accuracy).
        value: The reported value in percent (e.g. the official rounded one); default ``100 * mean``.
        group: The metric's breakdown group, if any.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        The :class:`~albef.reporting.schema.Metric`; with no unit at all, the value alone (0 when not given).
    """
    scores = torch.as_tensor(outcomes, dtype=torch.float64).reshape(-1)
    n = int(scores.shape[0])
    if n == 0:
        return Metric(0.0 if value is None else float(value), group=group, n=0)
    shown = float(100.0 * scores.mean()) if value is None else float(value)
    (interval,) = mean_intervals(100.0 * scores, resamples, seed)
    return Metric(shown, group=group, n=n, ci_low=interval.low, ci_high=interval.high)


def macro_percent_metric(
    outcomes: Tensor | Sequence[float],
    groups: Sequence[str],
    group: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Metric:
    """The mean over ``groups`` of each group's mean outcome, in percent, with a bootstrap interval.

    Units (examples) are resampled as a whole sample, so a group's share varies from resample to resample as
    it would on another draw of the benchmark; a group no example of a resample falls into is left out of that
    resample's mean. ``n`` is the number of examples.

    Args:
        outcomes: (N,) per-example scores in [0, 1].
        groups: (N,) the group of each example (a relation, an attribute pair, a subset).
        group: The metric's breakdown group, if any.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
    """
    scores = torch.as_tensor(outcomes, dtype=torch.float64).reshape(-1)
    if len(groups) != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} outcomes but {len(groups)} groups")
    n = int(scores.shape[0])
    if n == 0:
        return Metric(0.0, group=group, n=0)
    names = sorted(set(groups))
    index = torch.tensor([names.index(g) for g in groups])
    members = torch.zeros(n, len(names), dtype=torch.float64)
    members[torch.arange(n), index] = 1.0
    hits = members * scores[:, None]

    def macro(counts: Tensor) -> Tensor:
        size = counts @ members
        means = (counts @ hits) / size.clamp_min(1e-12)
        present = size > 0
        return (100.0 * (means * present).sum(dim=1) / present.sum(dim=1))[:, None]

    value = float(macro(torch.ones(1, n, dtype=torch.float64))[0, 0])
    (interval,) = percentile_intervals(bootstrap(macro, n, resamples, seed), n)
    return Metric(value, group=group, n=n, ci_low=interval.low, ci_high=interval.high)
