"""Partial results of a long evaluation step, saved as it goes so that ``--resume`` continues after a kill.

The re-rank step scores its pairs in blocks of ``every`` pairs; after each block :class:`PartialScores` writes
what is done (the pairs, their scores, how many) atomically to ``<work_dir>/rank<r>.pt``. A resumed evaluation
recomputes the features (deterministically, or reads them from the feature cache), finds the same pairs, loads
the scores already done and scores the rest: a pair's score does not depend on which call scored it, so the
result equals an uninterrupted run's bit for bit. The file is checked against the evaluation it was written
for (checkpoint, model, data, settings: ``key``) and against the pairs themselves before it is used.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from albef.checkpoint.io import torch_load_safe
from albef.errors import ConfigError
from albef.fileio import atomic_torch_save

DEFAULT_EVERY = 200_000
"""Pairs scored between two saves of the partial results (a few minutes of re-ranking on one GPU)."""


@dataclass
class PartialScores:
    """The partial re-rank scores of one rank of one evaluation.

    Attributes:
        path: The file (``<work_dir>/rank<r>.pt``).
        key: What the results belong to (checkpoint, model, data, settings); another key is refused.
        every: Pairs scored between two saves.
        resume: Continue from the file when it exists (``--resume``); otherwise start from zero.
    """

    path: Path
    key: str
    every: int = DEFAULT_EVERY
    resume: bool = False
    resumed_pairs: int = 0
    """How many pairs the file held when the evaluation started."""

    def load(self, pairs: Tensor) -> Tensor:
        """The scores already done for ``pairs`` (empty when starting from zero)."""
        if not self.resume or not self.path.is_file():
            return torch.empty(0)
        saved = torch_load_safe(self.path)
        if saved.get("key") != self.key or not torch.equal(saved["pairs"], pairs):
            raise ConfigError(
                f"{self.path} holds the partial results of another evaluation (other checkpoint, data, settings "
                "or candidates); run without --resume to start again"
            )
        scores: Tensor = saved["scores"]
        self.resumed_pairs = int(scores.shape[0])
        return scores

    def save(self, pairs: Tensor, scores: Tensor) -> None:
        """Record the scores of the first ``len(scores)`` pairs."""
        atomic_torch_save({"key": self.key, "pairs": pairs, "scores": scores.clone()}, self.path)

    def clear(self) -> None:
        """Remove the file once the evaluation is complete."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@dataclass
class PartialAnswers:
    """The answers one rank has given so far in a VQA evaluation, saved every ``every`` batches.

    The loader is ordered, so a resumed evaluation skips the batches already answered (the sampler starts at
    the next one) and gives every later batch exactly as an uninterrupted run would.
    """

    path: Path
    key: str
    every: int
    resume: bool = False
    resumed_questions: int = 0
    """How many answers the file held when the evaluation started."""

    def load(self) -> tuple[int, list[tuple[int, str]]]:
        """``(batches done, their (question_id, answer) pairs)``; ``(0, [])`` when starting from zero."""
        if not self.resume or not self.path.is_file():
            return 0, []
        saved = torch_load_safe(self.path)
        if saved.get("key") != self.key:
            raise ConfigError(
                f"{self.path} holds the partial answers of another evaluation (other checkpoint, split or "
                "ranking); run without --resume to start again"
            )
        pairs = [
            (int(q), str(a)) for q, a in zip(saved["question_ids"].tolist(), saved["answers"], strict=True)
        ]
        self.resumed_questions = len(pairs)
        return int(saved["batches"]), pairs

    def save(self, batches: int, pairs: list[tuple[int, str]]) -> None:
        """Record the answers of the first ``batches`` batches."""
        ids = torch.tensor([q for q, _ in pairs], dtype=torch.long)
        payload = {"key": self.key, "batches": batches, "question_ids": ids, "answers": [a for _, a in pairs]}
        atomic_torch_save(payload, self.path)

    def clear(self) -> None:
        """Remove the file once the evaluation is complete."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
