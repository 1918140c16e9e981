"""A task = the data it trains on, its objective, how a split is evaluated and which metric picks ``best.pt``.

The model comes from ``albef.models.create_model``. Every task plugs into the one
:class:`~albef.engine.trainer.Trainer`: :meth:`Task.evaluator` gives the evaluator of a split, and the
per-epoch validation of every task is that evaluator on ``"val"`` (``data.val_file``), judged by
:attr:`Task.selection`. Tasks register by name in :data:`TASKS` (the names of ``ExperimentConfig.task``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from torch import nn
from torch.utils.data import Dataset

from albef.config.schema import ExperimentConfig
from albef.data.datasets import EpochConcatDataset
from albef.data.tokenizer import TextTokenizer
from albef.engine.precision import Precision, resolve_precision
from albef.engine.trainer import EpochEvaluator, Objective
from albef.errors import ConfigError
from albef.evaluation.base import Evaluator
from albef.models.builders import create_model
from albef.registry import Registry
from albef.tasks.data import data_path


class Task(ABC):
    """Builds a task's training data and objective from a config.

    Args:
        cfg: The experiment config.
        tokenizer: The text tokenizer (its vocabulary must match ``cfg.model.text.vocab_size``).
    """

    def __init__(self, cfg: ExperimentConfig, tokenizer: TextTokenizer) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        if tokenizer.vocab_size != cfg.model.text.vocab_size:
            raise ValueError(
                f"tokenizer '{cfg.data.tokenizer}' has {tokenizer.vocab_size} tokens but "
                f"model.text.vocab_size is {cfg.model.text.vocab_size}"
            )

    def build_model(self) -> nn.Module:
        """The task model from ``cfg.model``."""
        return create_model(self.cfg.task, self.cfg.model)

    @abstractmethod
    def train_dataset(self) -> Dataset[Any]:
        """The training dataset over every ``data.train_files`` entry."""

    @abstractmethod
    def collator(self) -> Callable[[list[Any]], Any]:
        """The training collate function (tokenisation policy of the call site)."""

    @abstractmethod
    def objective(self) -> Objective:  # each task narrows the model/batch types of its objective
        """``(model, batch, alpha) -> {"*_loss": ..., logged scalars}``."""

    selection: ClassVar[str | None] = None
    """The metric of :meth:`evaluator` (higher is better) whose best validation epoch is kept as ``best.pt``;
    ``None``: the task validates nothing."""

    def evaluator(self, split: str, precision: Precision) -> Evaluator:
        """The evaluator of ``split`` (``val`` or ``test``; ``dev`` where the dataset names it so)."""
        raise ConfigError(f"task {self.cfg.task!r} has no evaluator")

    def epoch_evaluator(self) -> EpochEvaluator | None:
        """Validation after each training epoch: :meth:`evaluator` of ``val`` (none without ``data.val_file``)."""
        if self.selection is None or not self.cfg.data.val_file:
            return None

        def validate(model: nn.Module, epoch: int) -> dict[str, float]:
            del epoch
            device = next(model.parameters()).device  # the trainer has placed the model by now
            evaluator = self.evaluator("val", resolve_precision(self.cfg.runtime.precision, device))
            return evaluator.run(model).values()

        return validate

    def select_metric(self) -> str | None:
        """The validation metric that picks ``best.pt``; ``None`` keeps no best."""
        return self.selection if self.cfg.data.val_file else None

    def train_files_dataset(
        self,
        read: Callable[[Path], Any],
        dataset_cls: Callable[..., Dataset[Any]],
        transform: Callable[..., Any],
        roots: Any = None,
    ) -> Dataset[Any]:
        """One ``dataset_cls`` per ``data.train_files`` entry (records from ``read``), concatenated.

        Args:
            read: Reads a file's records.
            dataset_cls: A record dataset (``records, roots, transform, max_words=, source=, seed=,
                bad_images=``).
            transform: The training image transform.
            roots: Image root(s); ``data.image_root`` by default.
        """
        data = self.cfg.data
        roots = data_path(data, data.image_root) if roots is None else roots
        return EpochConcatDataset(
            [
                dataset_cls(
                    read(data_path(data, name)),
                    roots,
                    transform,
                    max_words=data.max_words,
                    source=str(data_path(data, name)),
                    seed=self.cfg.runtime.seed,
                    bad_images=data.bad_images,
                )
                for name in data.train_files
            ]
        )

    def check_model(self, model: nn.Module, global_batch: int) -> None:
        """Start-up checks that would otherwise crash mid-run (e.g. queue size vs global batch)."""
        queue = getattr(model, "queue", None)
        if queue is not None:
            queue.check_batch(global_batch)


TASKS: Registry[Callable[[ExperimentConfig, TextTokenizer], Task]] = Registry("training task")
