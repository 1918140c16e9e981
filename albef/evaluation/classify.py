"""Evaluators of the classifiers on the fused [CLS]: NLVR² (accuracy + consistency) and SNLI-VE (per class).

Both run the model over an ordered evaluation loader (``albef.data.loaders.build_loader(train=False)``), keep
one prediction per example in split order, and score with the pure functions of
:mod:`albef.evaluation.nlvr_eval`. An example whose image was skipped (``data.bad_images: skip``) gets no
prediction and counts as wrong; the count is reported. Each batch's forward is timed as the stage
``classify``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from albef.data.collate import LabelledBatch, PairBatch
from albef.data.formats import nlvr_consistency_groups
from albef.data.records import VE_LABELS
from albef.engine.distributed import World, all_gather_object
from albef.engine.precision import Precision
from albef.engine.transfer import to_device
from albef.evaluation.base import EvalResult, Evaluator
from albef.evaluation.bootstrap import percent_metric
from albef.evaluation.nlvr_eval import accuracy, per_class_accuracy, score_nlvr
from albef.models.classify import ALBEFNLVR, ALBEFVE
from albef.progress import track
from albef.reporting.measure import StageTimer

NO_PREDICTION = -1
"""The predicted class of an example that was not evaluated (its image was skipped)."""

VE_CLASS_NAMES: tuple[str, ...] = tuple(sorted(VE_LABELS, key=VE_LABELS.__getitem__))
"""SNLI-VE class names in class-index order: contradiction, neutral, entailment."""


@dataclass
class Predictions:
    """One evaluation pass: the predicted class of every example of the split, in split order.

    Attributes:
        classes: (N,) predicted class, :data:`NO_PREDICTION` where the example was skipped.
        logits: (N, C) float32 logits (zeros where skipped).
        skipped: Number of examples without a prediction.
    """

    classes: Tensor
    logits: Tensor
    skipped: int


def kept_positions(start: int, batch: Any) -> tuple[list[int], int]:
    """Split positions of a batch's samples, and the position after the batch.

    An ordered loader hands out consecutive positions; a skipped sample occupies its position but is absent
    from the batch (its :class:`~albef.data.images.SkippedImage` names it by ``index``).
    """
    skipped = {s.index for s in batch.skipped}
    span = len(batch) + len(batch.skipped)
    return [p for p in range(start, start + span) if p not in skipped], start + span


class ClassificationEvaluator(Evaluator):
    """The shared loop: forward every batch, keep the argmax per example.

    Args:
        loader: Ordered evaluation loader over the split, or over this rank's block of it from ``start``.
        labels: (N,) true class of every example of the whole split, in split order.
        precision: Device and autocast of the evaluation.
        world: This process's place in the job (the ranks' predictions are gathered).
        start: Split position of the loader's first example.
    """

    num_classes: ClassVar[int]
    item: ClassVar[str] = "example"

    def __init__(
        self,
        loader: DataLoader[Any],
        labels: Sequence[int],
        precision: Precision,
        world: World | None = None,
        start: int = 0,
    ) -> None:
        self.loader = loader
        self.labels = torch.tensor(list(labels), dtype=torch.long)
        self.precision = precision
        self.world = world or World()
        self.start = start
        """Split position of the loader's first example: under ``torchrun`` each rank's loader covers its own
        contiguous block of the split, and the predictions are gathered (no example twice, none dropped)."""

    @abstractmethod
    def forward(self, model: nn.Module, batch: Any) -> Tensor:
        """Logits (B, C) of one batch."""

    def predict(self, model: nn.Module, timer: StageTimer) -> Predictions:
        """Run ``model`` over the loader (eval mode, inference mode); its previous mode is restored.

        The logits of every batch are written into a buffer on the device, which comes back to the host once
        at the end: the loop never waits for the device.
        """
        n, device = self.labels.shape[0], self.precision.device
        logits = torch.zeros(n, self.num_classes, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        was_training, position = model.training, self.start
        model.eval()
        try:
            with torch.inference_mode(), self.precision.autocast():
                for batch in track(self.loader, total=len(self.loader), desc=f"classify {self.item}s"):
                    positions, position = kept_positions(position, batch)
                    index = to_device(torch.tensor(positions, dtype=torch.long), device)
                    batch = batch.to(device, non_blocking=True)
                    with timer.unsynced_stage("classify", items=len(batch), item=self.item):
                        logits.index_copy_(0, index, self.forward(model, batch).float())
                        done.index_fill_(0, index, True)
        finally:
            model.train(was_training)
        logits, done = logits.cpu(), done.cpu()
        classes = logits.argmax(dim=1).masked_fill(~done, NO_PREDICTION)
        if not self.world.distributed and position != n:
            raise ValueError(f"the loader yielded {position} examples but the split has {n} labels")
        if self.world.distributed:  # every position of the split must then come from exactly one rank
            logits, classes = self._gather(logits, classes, range(self.start, position))
        return Predictions(classes, logits, int((classes == NO_PREDICTION).sum()))

    def _gather(self, logits: Tensor, classes: Tensor, mine: range) -> tuple[Tensor, Tensor]:
        """Every rank's block of predictions, in split order; each position must come from exactly one rank."""
        parts = all_gather_object(
            (mine.start, logits[mine.start : mine.stop], classes[mine.start : mine.stop])
        )
        covered = torch.zeros(classes.shape[0], dtype=torch.long)
        for start, part_logits, part_classes in parts:
            stop = start + part_classes.shape[0]
            logits[start:stop], classes[start:stop] = part_logits, part_classes
            covered[start:stop] += 1
        if not bool((covered == 1).all()):
            raise ValueError("the ranks' evaluation blocks do not cover the split exactly once")
        return logits, classes

    def timer(self) -> StageTimer:
        """A stage timer on the evaluation device (the first batch is warm-up when there are several)."""
        return StageTimer(self.precision.device, warmup=1 if len(self.loader) > 1 else 0)


class NLVREvaluator(ClassificationEvaluator):
    """NLVR²: accuracy and consistency (percent) of the True/False predictions on one split.

    Args:
        loader: Ordered loader of :class:`~albef.data.collate.PairBatch` es.
        labels: (N,) 1 for "True", 0 for "False".
        identifiers: lil-lab identifiers of the examples (consistency groups, predictions file).
        precision: Device and autocast.
        identifier_source: Where the identifiers came from (``file``, ``images``, ``sentences``; see
            :func:`albef.evaluation.nlvr_eval.example_identifiers`), recorded in the result.
        world: This process's place in the job.
        start: Split position of the loader's first example.
    """

    task = "nlvr"
    num_classes = 2
    item = "pair"

    def __init__(
        self,
        loader: DataLoader[Any],
        labels: Sequence[int],
        identifiers: Sequence[str],
        precision: Precision,
        identifier_source: str = "file",
        world: World | None = None,
        start: int = 0,
    ) -> None:
        super().__init__(loader, labels, precision, world, start)
        if len(identifiers) != len(labels):
            raise ValueError(f"{len(identifiers)} identifiers for {len(labels)} examples")
        self.identifiers = list(identifiers)
        self.identifier_source = identifier_source

    def forward(self, model: nn.Module, batch: PairBatch) -> Tensor:
        nlvr = cast(ALBEFNLVR, model)
        return nlvr.logits(batch.image0, batch.image1, batch.text.input_ids, batch.text.attention_mask)

    def run(self, model: nn.Module) -> EvalResult:
        timer = self.timer()
        pred = self.predict(model, timer)
        correct = (pred.classes == self.labels).tolist()
        score = score_nlvr(correct, self.identifiers)
        groups = nlvr_consistency_groups(self.identifiers)
        consistent = [float(all(correct[i] for i in members)) for members in groups.values()]
        metrics = {  # intervals: pairs resampled for accuracy, sentence groups for consistency
            "accuracy": percent_metric([float(c) for c in correct], 100.0 * score.accuracy),
            "consistency": percent_metric(consistent, 100.0 * score.consistency),
        }
        return EvalResult(
            metrics,
            n_samples=score.examples,
            stages=timer.stats(),
            memory=timer.peak_memory(),
            outputs={
                "identifiers": self.identifiers,
                "predictions": [bool(c == 1) for c in pred.classes.tolist()],
                "evaluated": [bool(c != NO_PREDICTION) for c in pred.classes.tolist()],
                "logits": pred.logits,
                "labels": self.labels,
            },
            extra={
                "groups": score.groups,
                "skipped_examples": pred.skipped,
                "identifier_source": self.identifier_source,
            },
        )


class VEEvaluator(ClassificationEvaluator):
    """SNLI-VE: accuracy (percent) overall and per class (``accuracy_<class>``, ``group="class"``)."""

    task = "ve"
    num_classes = len(VE_CLASS_NAMES)
    item = "example"

    def forward(self, model: nn.Module, batch: LabelledBatch) -> Tensor:
        return cast(ALBEFVE, model).logits(batch.image, batch.text.input_ids, batch.text.attention_mask)

    def run(self, model: nn.Module) -> EvalResult:
        timer = self.timer()
        pred = self.predict(model, timer)
        hits = (pred.classes == self.labels).double()
        metrics = {"accuracy": percent_metric(hits, 100.0 * accuracy(pred.classes, self.labels))}
        per_class = per_class_accuracy(pred.classes, self.labels, self.num_classes)
        for i, (name, value) in enumerate(zip(VE_CLASS_NAMES, per_class, strict=True)):
            if value is not None:
                metrics[f"accuracy_{name}"] = percent_metric(hits[self.labels == i], 100.0 * value, "class")
        counts = {name: int((self.labels == i).sum()) for i, name in enumerate(VE_CLASS_NAMES)}
        return EvalResult(
            metrics,
            n_samples=int(self.labels.shape[0]),
            stages=timer.stats(),
            memory=timer.peak_memory(),
            outputs={"classes": pred.classes, "logits": pred.logits, "labels": self.labels},
            extra={"class_counts": counts, "skipped_examples": pred.skipped},
        )
