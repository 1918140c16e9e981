"""The compositionality evaluator: Winoground, SugarCrepe and ARO scored with ITC, ITM and ITM + ITC at once.

A :class:`Benchmark` lists, per example, the (image, caption) pairs it compares; :class:`CompositionalEvaluator`
encodes every distinct image and caption once, scores every distinct pair once with all three scorers
(:func:`~albef.evaluation.pair_scores.score_pairs`) and hands the per-example score tensors to the benchmark,
which turns them into metrics with bootstrap intervals (:mod:`albef.evaluation.compositional`).

Metric names are ``<scorer>/<metric>`` (``itm/group_score``, ``itc/accuracy``); breakdowns (Winoground tags,
SugarCrepe subsets, ARO relations) are grouped by ``<scorer> by <what>``. The report also carries the three
scorers side by side as one table (``extra["tables"]``) and every example's scores (``outputs["samples"]``).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from albef.data.collate import collate_images
from albef.data.datasets import CropBox, IndexedImage, RecordDataset, Transform
from albef.data.formats_compositional import ContrastExample, WinogroundExample
from albef.data.loaders import build_loader
from albef.data.text import pre_caption
from albef.data.tokenizer import TextTokenizer
from albef.engine.precision import Precision
from albef.evaluation.base import EvalResult, Evaluator
from albef.evaluation.bootstrap import macro_percent_metric, percent_metric
from albef.evaluation.compositional import (
    SCORER_NAMES,
    SCORERS,
    WINOGROUND_CHANCE,
    contrast_outcomes,
    macro_groups,
    winoground_outcomes,
)
from albef.evaluation.pair_scores import PairScores, score_pairs
from albef.models.albef import ContrastiveALBEF
from albef.reporting.measure import StageTimer
from albef.reporting.schema import Metric

ImageKey = tuple[str, CropBox | None]


class BenchmarkImages(RecordDataset[tuple[str, CropBox | None]]):
    """The distinct images of a benchmark, each ``(path, crop box or None)``, in the given order."""

    def __init__(
        self,
        images: Sequence[tuple[str, CropBox | None]],
        image_root: str | Path,
        transform: Transform,
        **kwargs: Any,
    ) -> None:
        super().__init__(images, transform, **kwargs)
        self.image_root = image_root

    def build(self, record: tuple[str, CropBox | None], index: int, rng: random.Random) -> IndexedImage:
        return IndexedImage(self.image(self.image_root, record[0], index, record[1]), index)


@dataclass
class Measured:
    """What a benchmark makes of its scores: metrics, chance levels, and one JSON record per example."""

    metrics: dict[str, Metric] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)


def group_masks(groups: Sequence[str]) -> dict[str, Tensor]:
    """Each distinct group (sorted) -> the boolean mask of its examples."""
    index = {g: i for i, g in enumerate(sorted(set(groups)))}
    ids = torch.tensor([index[g] for g in groups])
    return {g: ids == i for g, i in index.items()}


def rounded_rows(table: Tensor) -> list[Any]:
    """A score table as nested lists of floats rounded to 6 decimals (what the per-sample log holds)."""

    def rounded(value: Any) -> Any:
        return [rounded(v) for v in value] if isinstance(value, list) else round(value, 6)

    return [rounded(row) for row in table.tolist()]


class Benchmark(ABC):
    """A benchmark's examples as pairs to score, and its metrics of the scores."""

    pairs_per_example: int

    @abstractmethod
    def pairs(self) -> list[list[tuple[ImageKey, str]]]:
        """Per example, its (image, caption) pairs in the order :meth:`measure` reads them."""

    @abstractmethod
    def measure(self, scores: dict[str, Tensor]) -> Measured:
        """Metrics of ``scores`` (scorer -> (N, pairs_per_example) in :meth:`pairs` order)."""


class WinogroundBenchmark(Benchmark):
    """Winoground: text, image and group scores, overall and per ``collapsed_tag``."""

    pairs_per_example = 4

    def __init__(self, examples: Sequence[WinogroundExample]) -> None:
        self.examples = list(examples)

    def pairs(self) -> list[list[tuple[ImageKey, str]]]:
        # [caption, image] order: (c0, i0), (c0, i1), (c1, i0), (c1, i1).
        return [
            [((ex.images[i], None), ex.captions[c]) for c in (0, 1) for i in (0, 1)] for ex in self.examples
        ]

    def measure(self, scores: dict[str, Tensor]) -> Measured:
        out = Measured()
        masks = group_masks([ex.collapsed_tag or ex.tag or "all" for ex in self.examples])
        for scorer, table in scores.items():
            outcomes = winoground_outcomes(table.view(-1, 2, 2))
            for name, hits in outcomes.items():
                out.metrics[f"{scorer}/{name}"] = percent_metric(hits.double())
                out.chance[f"{scorer}/{name}"] = WINOGROUND_CHANCE[name]
                for tag, mask in masks.items():
                    out.metrics[f"{scorer}/{tag}/{name}"] = percent_metric(
                        hits[mask].double(), group=f"{scorer} by tag"
                    )
                    out.chance[f"{scorer}/{tag}/{name}"] = WINOGROUND_CHANCE[name]
        rounded = {scorer: rounded_rows(table.view(-1, 2, 2)) for scorer, table in scores.items()}
        for i, ex in enumerate(self.examples):
            record: dict[str, Any] = {"id": ex.id, "tag": ex.tag, "collapsed_tag": ex.collapsed_tag}
            record.update({scorer: rows[i] for scorer, rows in rounded.items()})
            out.samples.append(record)
        return out


class ContrastBenchmark(Benchmark):
    """One image against its true caption and negatives: SugarCrepe, ARO.

    Args:
        examples: The examples (the true caption first); every one has the same number of captions.
        group_label: What the groups are (``subset``, ``relation``, ``attribute pair``).
        macro: Headline the macro average over groups (``macro_accuracy``) besides the micro ``accuracy``.
        ties_win: A tie with the best negative is right (ARO's Order sets), else wrong.
        excluded: Groups left out of the macro average (ARO's relations whose orders mean the same).
        min_count: Groups with fewer examples are left out of the macro average (VG-Attribution: 25).
    """

    def __init__(
        self,
        examples: Sequence[ContrastExample],
        group_label: str,
        macro: bool = True,
        ties_win: bool = False,
        excluded: Sequence[str] = (),
        min_count: int = 1,
    ) -> None:
        self.examples = list(examples)
        sizes = {len(ex.captions) for ex in self.examples}
        if len(sizes) != 1:
            raise ValueError(f"every example needs the same number of captions, got {sorted(sizes)}")
        self.pairs_per_example = sizes.pop()
        self.group_label, self.macro, self.ties_win = group_label, macro, ties_win
        self.excluded, self.min_count = tuple(excluded), min_count

    def pairs(self) -> list[list[tuple[ImageKey, str]]]:
        return [[((ex.image, ex.box), caption) for caption in ex.captions] for ex in self.examples]

    def measure(self, scores: dict[str, Tensor]) -> Measured:
        out = Measured()
        groups = [ex.group for ex in self.examples]
        masks = group_masks(groups)
        counted = torch.tensor(macro_groups(groups, self.excluded, self.min_count))
        kept = [g for g, keep in zip(groups, counted.tolist(), strict=True) if keep]
        chance = 100.0 / self.pairs_per_example
        for scorer, table in scores.items():
            hits = contrast_outcomes(table, self.ties_win).double()
            out.metrics[f"{scorer}/accuracy"] = percent_metric(hits)
            out.chance[f"{scorer}/accuracy"] = chance
            if self.macro:
                out.metrics[f"{scorer}/macro_accuracy"] = macro_percent_metric(hits[counted], kept)
                out.chance[f"{scorer}/macro_accuracy"] = chance
            for group, mask in masks.items():
                out.metrics[f"{scorer}/{group}"] = percent_metric(
                    hits[mask], group=f"{scorer} by {self.group_label}"
                )
                out.chance[f"{scorer}/{group}"] = chance
        rounded = {scorer: rounded_rows(table) for scorer, table in scores.items()}
        for i, ex in enumerate(self.examples):
            record: dict[str, Any] = {"id": ex.id, "image": ex.image, self.group_label: ex.group}
            record["captions"] = list(ex.captions)
            record.update({scorer: rows[i] for scorer, rows in rounded.items()})
            out.samples.append(record)
        return out


def side_by_side(metrics: dict[str, Metric]) -> dict[str, Any]:
    """The metrics of the three scorers as one table: a row per metric, a column per scorer."""
    rows: dict[str, dict[str, str]] = {}
    for name, metric in metrics.items():
        scorer, _, rest = name.partition("/")
        if scorer in SCORERS:
            rows.setdefault(rest, {})[scorer] = metric.formatted(1) + (
                "" if metric.ci_low is None else f" [{metric.ci_low:.1f}, {metric.ci_high:.1f}]"
            )
    return {
        "headers": ["metric", *(SCORER_NAMES[s] for s in SCORERS)],
        "rows": [[rest, *(cells.get(s, "-") for s in SCORERS)] for rest, cells in rows.items()],
    }


class CompositionalEvaluator(Evaluator):
    """Scores a :class:`Benchmark` with every scorer (module docstring).

    Args:
        task_name: The benchmark (``winoground``, ``sugarcrepe``, ``aro``), named in errors.
        benchmark: The examples and their metrics.
        image_root: Root of the benchmark's image paths.
        transform: The test transform.
        tokenizer: The model's tokenizer.
        precision: Device and autocast.
        batch_size: Images per encoder batch.
        max_words: ``pre_caption`` word limit.
        max_length: Token length of the captions.
        num_workers: Image loading workers.
        source: The annotation file, named in errors.
    """

    def __init__(
        self,
        task_name: str,
        benchmark: Benchmark,
        image_root: str | Path,
        transform: Transform,
        tokenizer: TextTokenizer,
        precision: Precision,
        batch_size: int = 64,
        max_words: int = 30,
        max_length: int = 30,
        num_workers: int = 0,
        source: str = "",
    ) -> None:
        self.name = task_name
        self.benchmark = benchmark
        self.image_root, self.transform, self.tokenizer = image_root, transform, tokenizer
        self.precision, self.batch_size, self.num_workers = precision, batch_size, num_workers
        self.max_words, self.max_length, self.source = max_words, max_length, source

    task = "compositional"

    def run(self, model: nn.Module) -> EvalResult:
        if not isinstance(model, ContrastiveALBEF):
            raise TypeError(f"{self.name} scores with ITC and ITM: it needs a retrieval or pretraining model")
        per_example = self.benchmark.pairs()
        images: dict[ImageKey, int] = {}
        texts: dict[str, int] = {}
        image_idx, text_idx = [], []
        for pairs in per_example:
            for image, caption in pairs:
                image_idx.append(images.setdefault(image, len(images)))
                text_idx.append(texts.setdefault(pre_caption(caption, self.max_words), len(texts)))
        dataset = BenchmarkImages(list(images), self.image_root, self.transform, source=self.source)
        loader = build_loader(
            dataset, self.batch_size, collate_images, train=False, num_workers=self.num_workers
        )
        timer = StageTimer(self.precision.device)
        scores: PairScores = score_pairs(
            model, loader, list(texts), torch.tensor(image_idx), torch.tensor(text_idx), self.tokenizer,
            self.precision, self.max_length, timer=timer,
        )  # fmt: skip
        width = self.benchmark.pairs_per_example
        tables = {scorer: scores.of(scorer).view(-1, width) for scorer in SCORERS}
        measured = self.benchmark.measure(tables)
        return EvalResult(
            measured.metrics,
            n_samples=len(per_example),
            stages=timer.stats(),
            memory=timer.peak_memory(),
            outputs={"samples": measured.samples, "scores": tables},
            extra={
                "chance": measured.chance,
                "images": len(images),
                "captions": len(texts),
                "pairs_requested": len(image_idx),
                "pairs_scored": scores.pairs_scored,
                "scorers": {s: SCORER_NAMES[s] for s in SCORERS},
                "tables": {"ITC vs ITM vs ITM + ITC": side_by_side(measured.metrics)},
            },
        )
