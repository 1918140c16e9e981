"""A task = the data it trains on + its objective; the model comes from ``albef.models.create_model``.

Every task plugs into the one :class:`~albef.engine.trainer.Trainer`. Tasks register by name in
:data:`TASKS` (the names of ``ExperimentConfig.task``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from albef.config.schema import ExperimentConfig
from albef.data.datasets import EpochConcatDataset
from albef.data.tokenizer import TextTokenizer
from albef.engine.trainer import EpochEvaluator, Objective
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

    def epoch_evaluator(self) -> EpochEvaluator | None:
        """Validation run after each training epoch (``None``: no validation)."""
        return None

    def select_metric(self) -> str | None:
        """The validation metric (higher is better) that picks ``best.pt``; ``None`` keeps no best."""
        return None

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
