"""The evaluator interface: every task evaluator runs a model over a split and returns an :class:`EvalResult`.

An evaluator owns the loops (encoding, ranking, decoding) and times its stages with the stage timers of
:mod:`albef.reporting`; the metrics themselves are pure functions on tensors. :func:`EvalResult.to_report`
turns a result into the :class:`~albef.reporting.RunReport` that the CLI writes (STYLE §11, §12).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from albef.reporting.schema import Metric, PeakMemory, RunReport, StageStats


@dataclass
class EvalResult:
    """What an evaluator measured on one split.

    Attributes:
        metrics: Name -> :class:`Metric` (official key names; grouped breakdowns carry ``group``).
        n_samples: Items scored (images + texts for retrieval, questions for VQA, examples otherwise).
        stages: Timed stages (``image_encode``, ``itm_rerank``, ``answer_ranking``, ...).
        memory: Peak memory during the evaluation.
        outputs: Task outputs kept for files and tests (score matrices, predictions), not serialised.
        extra: JSON-ready task details for the report's ``extra`` (e.g. ``recall_at_k``, file paths).
    """

    metrics: dict[str, Metric]
    n_samples: int
    stages: dict[str, StageStats] = field(default_factory=dict)
    memory: PeakMemory | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, float]:
        """Metric name -> value (what a validation hook returns)."""
        return {name: m.value for name, m in self.metrics.items()}

    def to_report(self, **fields: Any) -> RunReport:
        """A ``kind="evaluation"`` run report; ``fields`` fill task, dataset, split, environment, config..."""
        report = RunReport(kind="evaluation", **fields)
        report.metrics.update(self.metrics)
        report.stages.update(self.stages)
        report.memory = self.memory
        report.extra = {"n_samples": self.n_samples, **self.extra, **report.extra}
        return report


class Evaluator(ABC):
    """Evaluates a model on one split of one task (the data is bound at construction)."""

    task: ClassVar[str]
    """The report's task name (``retrieval``, ``vqa``, ``nlvr``, ``ve``)."""

    @abstractmethod
    def run(self, model: nn.Module) -> EvalResult:
        """Evaluate ``model`` (in eval mode, without gradients) and return the result."""
