"""VQA evaluation: answer-list ranking over a split, then the evaluation-server result file and local scoring.

:class:`VQAEvaluator` encodes each batch of questions, ranks the answer list (first-token top-k, then
teacher-forced re-scoring; :meth:`~albef.models.vqa.ALBEFVQA.rank_answers`) and keeps the best answer per
question. Under ``torchrun`` every rank ranks its shard; the shards are gathered and de-duplicated (the
evaluation sampler pads with repeated questions, spec §5.2 step 6).

The result file is the official server format ``[{"question_id": int, "answer": str}, ...]``:
:func:`~albef.evaluation.vqa_files.write_result_file` writes it once per question and refuses an incomplete
set, naming the missing ids (the files are :mod:`albef.evaluation.vqa_files`). Scoring itself is
:mod:`albef.evaluation.vqa_eval`; the rows of a decoder call are :func:`~albef.evaluation.memory_plan.rank_chunk_rows`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from albef import errors
from albef.config.schema import BadImageMode
from albef.data.collate import TextPolicy, VQABatch, VQACollator
from albef.data.datasets import VQADataset
from albef.data.errors import DataError
from albef.data.loaders import build_loader, set_epoch
from albef.data.records import VQARecord
from albef.data.tokenizer import TextTokenizer, TokenBatch
from albef.data.transforms import build_test_transform
from albef.engine.distributed import World, all_gather_object
from albef.engine.precision import Precision
from albef.evaluation.base import EvalResult, Evaluator
from albef.evaluation.memory_plan import call_budget, rank_chunk_rows
from albef.evaluation.partial import PartialAnswers
from albef.evaluation.vqa_eval import (
    GroundTruth,
    QuestionIdMismatchError,
    Rounding,
    VQAAccuracy,
    accuracy_metrics,
    check_question_ids,
    vqa_accuracy,
)
from albef.evaluation.vqa_files import ConflictingAnswersError, merge_answers
from albef.models.vqa import ALBEFVQA, AnswerScoring, RankedAnswers
from albef.progress import track
from albef.reporting.measure import StageTimer

DEFAULT_K = 128
"""Candidates re-scored per question (the official ``k_test``)."""


# -- the evaluator ------------------------------------------------------------------------------------------
RANKED_KEPT = 5
"""Ranked answers kept per question for the per-sample log."""


@dataclass
class VQASplit:
    """The questions of one split and what ranking them needs.

    Attributes:
        name: ``test``, ``val``...
        records: The questions (each with its ``question_id``), in file order.
        roots: Image root per record ``dataset`` (``vqa``, ``vg``).
        answer_list: The candidate answers.
        source: The questions file, for messages.
        truths: Ground truth for local scoring, or ``None`` (e.g. test-dev, scored by the server).
    """

    name: str
    records: list[VQARecord]
    roots: dict[str, Path]
    answer_list: list[str]
    source: str
    truths: list[GroundTruth] | None = None

    @property
    def question_ids(self) -> list[int]:
        """Every question id, in file order."""
        return [int(r.question_id) for r in self.records if r.question_id is not None]


@dataclass
class RankingOptions:
    """How the answer list is ranked: ``k`` candidates, the scoring, and the rows of one decoder call: fixed
    (``chunk_size``), or as many as fit in ``budget_mb`` (default: the device's, see
    :func:`~albef.evaluation.memory_plan.call_budget`)."""

    k: int = DEFAULT_K
    scoring: AnswerScoring = "official"
    chunk_size: int | None = None
    budget_mb: float | None = None

    def rows_per_call(self, model: ALBEFVQA, question_len: int, answer_len: int, precision: Precision) -> int:
        """Rows of one decoder call for questions of ``question_len`` tokens."""
        if self.chunk_size:
            return self.chunk_size
        budget = call_budget(precision.device, self.budget_mb)[0]
        compute_bytes = 2 if precision.autocast_dtype is not None else 4
        return rank_chunk_rows(model, question_len, answer_len, budget, compute_bytes, self.k)


@dataclass
class LoaderOptions:
    """How the questions are batched and pre-processed (``bad_images``: see ``DataConfig.bad_images``; a
    skipped image leaves its question unanswered, so the result set is then refused as incomplete)."""

    image_res: int
    batch_size: int = 16
    max_words: int = 50
    num_workers: int = 0
    bad_images: BadImageMode = "error"
    world: World = field(default_factory=World)


class VQAEvaluator(Evaluator):
    """Ranks the answer list for every question of a split; scores it when the split has ground truth.

    Args:
        split: The questions, roots, answer list and optional ground truth.
        tokenizer: Tokenizes questions (no truncation, padded to the longest) and answers.
        precision: Device and autocast of the evaluation.
        loader: Batching (``batch_size_test``), question word limit (50) and the distributed world.
        ranking: ``k``, scoring and chunking of :meth:`ALBEFVQA.rank_answers`.
        rounding: How the official accuracy rounds exact ties (``albef.evaluation.vqa_eval``).
    """

    task = "vqa"

    def __init__(
        self,
        split: VQASplit,
        tokenizer: TextTokenizer,
        precision: Precision,
        loader: LoaderOptions,
        ranking: RankingOptions | None = None,
        rounding: Rounding = "python3",
    ) -> None:
        missing = [i for i, r in enumerate(split.records) if r.question_id is None]
        if missing:
            raise DataError(split.source, "a VQA evaluation question needs a question_id", index=missing[0])
        self.split = split
        self.tokenizer = tokenizer
        self.precision = precision
        self.options = loader
        self.ranking = ranking or RankingOptions()
        self.rounding = rounding
        self.partial: PartialAnswers | None = None
        """Where the answers are saved as they come (``--resume`` continues from them)."""
        self.rows_per_call = 0
        """The most (question, candidate) rows one decoder call held (reported)."""
        self.ranked: dict[int, list[tuple[str, float]]] = {}
        """Question id -> its best :data:`RANKED_KEPT` answers with their probabilities (``--log-samples``; the
        questions answered before a ``--resume`` have none)."""

    def _loader(self) -> torch.utils.data.DataLoader[Any]:
        dataset = VQADataset(
            self.split.records,
            self.split.roots,
            build_test_transform(self.options.image_res),
            max_words=self.options.max_words,
            source=self.split.source,
            bad_images=self.options.bad_images,
        )
        world, collate = self.options.world, VQACollator(self.tokenizer, TextPolicy(max_length=None))
        return build_loader(
            dataset, self.options.batch_size, collate, train=False, num_workers=self.options.num_workers,
            rank=world.rank, world_size=world.world_size,
        )  # fmt: skip

    @torch.inference_mode()
    def answer_questions(self, model: ALBEFVQA, timer: StageTimer) -> list[tuple[int, str]]:
        """``(question_id, best answer)`` for this rank's shard, timing ``question_encode`` and ``answer_ranking``."""
        device = self.precision.device
        answers = self.tokenizer.encode_answers(self.split.answer_list).to(device)
        loader = self._loader()
        done, pairs = self.partial.load() if self.partial is not None else (0, [])
        set_epoch(loader, 0, start_batch=done)  # after a resume: the batches not answered yet
        # Each batch's ranked answers stay on the device until a save or the end: no wait in the loop.
        pending: list[tuple[list[int], RankedAnswers]] = []
        names = self.split.answer_list

        def collect() -> None:
            for question_ids, ranked in pending:
                top = min(RANKED_KEPT, ranked.ids.shape[1])
                ids, probs = ranked.ids[:, :top].tolist(), ranked.probs[:, :top].tolist()
                for q, row, p in zip(question_ids, ids, probs, strict=True):
                    pairs.append((q, names[row[0]]))
                    self.ranked[q] = [(names[i], v) for i, v in zip(row, p, strict=True)]
            pending.clear()

        for n, batch in enumerate(
            track(loader, total=len(loader), desc="VQA answer ranking"), start=done + 1
        ):
            question_ids = batch.question_id.tolist()  # host memory: no device wait
            batch = batch.to(device, non_blocking=True)
            pending.append((question_ids, self.rank_batch(model, batch, answers, timer)))
            if self.partial is not None and n % self.partial.every == 0:
                collect()
                self.partial.save(n, pairs)
        collect()
        return pairs

    def rank_batch(
        self, model: ALBEFVQA, batch: VQABatch, answers: TokenBatch, timer: StageTimer
    ) -> RankedAnswers:
        """The ranked answers (indices into the answer list, best first, and their probabilities) of each
        question of ``batch``."""
        size = len(batch.question_id)
        question = batch.question
        with self.precision.autocast():
            with timer.unsynced_stage("question_encode", items=size, item="question"):
                states = model.encode_question(batch.image, question.input_ids, question.attention_mask)
            rows = self.ranking.rows_per_call(
                model, question.input_ids.shape[1], answers.input_ids.shape[1], self.precision
            )
            self.rows_per_call = max(self.rows_per_call, rows)
            with timer.unsynced_stage("answer_ranking", items=size, item="question"):
                ranked = model.rank_answers(
                    states,
                    question.attention_mask,
                    answers.input_ids,
                    answers.attention_mask,
                    k=self.ranking.k,
                    pad_id=self.tokenizer.pad_token_id,
                    scoring=self.ranking.scoring,
                    chunk_size=rows,
                )
        return ranked

    def run(self, model: nn.Module) -> EvalResult:
        """Answer every question (all ranks), merge, and score when the split has ground truth.

        Raises:
            DataError: Two ranks answered a question differently, questions were left unanswered (e.g.
                skipped images), or the ground truth is for other questions; the ids are named.
        """
        if not isinstance(model, ALBEFVQA):
            raise TypeError(f"VQA evaluation needs an ALBEFVQA model, got {type(model).__name__}")
        warmup = 1 if len(self.split.records) > 2 * self.options.batch_size else 0
        timer = StageTimer(self.precision.device, warmup=warmup)
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            pairs = self.answer_questions(model, timer)
        finally:
            model.train(was_training)
        world = self.options.world
        try:
            answers = merge_answers(all_gather_object(pairs) if world.distributed else [pairs])
            if world.distributed:
                self.ranked = {q: r for part in all_gather_object(self.ranked) for q, r in part.items()}
            wall = time.perf_counter() - start
            check_question_ids(answers, self.split.question_ids)  # e.g. questions whose image was skipped
            truths = self.split.truths
            accuracy = vqa_accuracy(answers, truths, self.rounding) if truths is not None else None
        except (QuestionIdMismatchError, ConflictingAnswersError) as err:
            message = f"refusing to write an incomplete or inconsistent result file: {err}"
            raise errors.DataError(message) from err
        return EvalResult(
            metrics=accuracy_metrics(accuracy, self.split.truths or []) if accuracy is not None else {},
            n_samples=len(answers),
            stages=timer.stats(),
            memory=timer.peak_memory(),
            outputs={
                "answers": answers,
                "accuracy": accuracy,
                "question_ids": self.split.question_ids,
                "ranked": self.ranked,
                "truths": self.split.truths,
            },
            extra=self._extra(len(answers), wall, accuracy),
        )

    def _extra(self, answered: int, wall: float, accuracy: VQAAccuracy | None) -> dict[str, Any]:
        """The report's task details: end-to-end speed, ranking settings, the official accuracy dict."""
        extra: dict[str, Any] = {
            "questions_per_s": answered / max(wall, 1e-9),
            "wall_time_s": wall,
            "k": min(self.ranking.k, len(self.split.answer_list)),
            "answer_scoring": self.ranking.scoring,
            "answer_list_size": len(self.split.answer_list),
            "rank_chunk_size": self.ranking.chunk_size,
            "rank_budget_mb": self.ranking.budget_mb,
            "rank_rows_per_call": self.rows_per_call,
        }
        if self.partial is not None:  # complete: the saved answers are no longer needed
            extra["resumed_questions"] = self.partial.resumed_questions
            self.partial.clear()
        if accuracy is not None:
            extra["vqa_accuracy"] = accuracy.official_dict()
            extra["untyped_questions"] = accuracy.untyped
            extra["rounding"] = accuracy.rounding
        return extra
