"""VQA finetuning: weighted answer generation with momentum distillation (spec §2.6), and its evaluation split.

Each question is encoded with cross-attention to its image; the question states are repeated once per
training answer, and the decoder is teacher-forced on ``[CLS] answer [SEP]``. The per-answer loss is summed
over tokens, mixed with the momentum teacher's soft targets, weighted (VQA: annotator share; VG: 0.5) and
divided by the number of *questions* (spec §7 Q24).

Distillation weight: the trainer passes ``alpha`` (``model.alpha``, ramped over the first epoch). The
released ``vqa.pth`` was trained before the 2022 fix, when the teacher ran but its weight was 0 (spec §7 Q4);
``model.alpha=0`` with ``distill: true`` reproduces that exactly (the teacher is still EMA-updated).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from albef.config.io import to_dict
from albef.config.schema import ExperimentConfig
from albef.data.collate import TextPolicy, VQABatch, VQACollator
from albef.data.datasets import VQADataset
from albef.data.formats import read_answer_list, read_vqa_test, read_vqa_train
from albef.data.records import VQARecord
from albef.data.tokenizer import TextTokenizer
from albef.engine.distributed import World, current_world
from albef.engine.precision import Precision
from albef.engine.trainer import Objective
from albef.errors import ConfigError
from albef.evaluation.base import EvalResult
from albef.evaluation.partial import PartialAnswers
from albef.evaluation.vqa import LoaderOptions, RankingOptions, VQAEvaluator, VQASplit
from albef.evaluation.vqa_files import ground_truth_of, read_vqa_annotations, write_result_file
from albef.models.vqa import ALBEFVQA
from albef.reporting.environment import file_sha256
from albef.tasks.base import TASKS, Option, Task
from albef.tasks.data import data_path, train_transform

IGNORE = -100
SELECT_METRIC = "overall"
SAVE_EVERY = 5000
"""Questions answered between two saves of a resumable evaluation's answers."""
SPLITS = ("test", "val")

FINETUNE_DESCRIPTION = """\
Finetune VQA (spec §2.6) from a pretraining checkpoint (the answer decoder starts from its fusion layers) or
from a finetuned VQA checkpoint (loaded as is). The decoder is trained on '[CLS] answer [SEP]' with the
official answer weights (VQA: annotator share, VG: 0.5), the loss summed over tokens and divided by the number
of questions, with distillation from the momentum encoder/decoder. --inactive-distill reproduces the released
vqa.pth instead, whose distillation weight was 0 (spec §7 Q4). Validation each epoch only when data.val_file
is set. At the end the test split is answered: <output-dir>/vqa_result_test.json (evaluation-server format)
and, when the split has annotations, its official accuracy in <output-dir>/vqa_test_report.json.
"""

EVALUATE_DESCRIPTION = """\
Answer every question of a split by ranking the answer list (first-token top-k, then teacher-forced
re-scoring of the k candidates, chunked) and write the evaluation-server file
<output-dir>/vqa_result_<split>.json ([{"question_id", "answer"}], once per question; an incomplete set is
refused and its missing ids listed). When the split has annotations (--annotations, data.test_annotations,
or answers in the split file) it is scored with the official VQA accuracy. The run report
<output-dir>/vqa_<split>_report.json holds the metrics and the per-stage throughput.
"""

RANKING_OPTIONS = (
    Option("--k", "candidates re-scored per question (default: eval.k_test)", type=int),
    Option(
        "--answer-scoring",
        "official: log p(first token) + sequence log-likelihood (first token counted twice, reproduces the "
        "paper); sequence: the sequence log-likelihood alone (BLIP/LAVIS)",
        choices=("official", "sequence"),
        default="official",
    ),
    Option(
        "--rank-chunk-size",
        "(question, candidate) rows per decoder call (default: as many as fit in --rank-budget-mb, at most 2048)",
        type=int,
    ),
    Option(
        "--rank-budget-mb",
        "memory budget of one decoder call in MiB (default: 1024 on a CPU, a quarter of the free memory on a GPU)",
        type=float,
    ),
)
"""How the answer list is ranked: options of both ``albef finetune vqa`` and ``albef evaluate vqa``."""
ROUNDING_OPTION = Option(
    "--rounding",
    "how exact ties of the 2-decimal accuracy round: python3 (default, to even: the official code as run today) "
    "or python2 (away from zero: the original tool)",
    choices=("python3", "python2"),
    default="python3",
)


# -- the loss (pure) ----------------------------------------------------------------------------------------
def answer_targets(answer_ids: Tensor, pad_id: int) -> Tensor:
    """Next-token targets (N, La-1): tokens ``1..end`` with padding set to -100."""
    targets = answer_ids[:, 1:]
    return targets.masked_fill(targets == pad_id, IGNORE)


def per_answer_loss(
    logits: Tensor, targets: Tensor, teacher_logits: Tensor | None = None, alpha: float = 0.0
) -> Tensor:
    """Per-answer loss (N,): token NLL summed over the answer, mixed with distillation.

    Args:
        logits: Student logits (N, T, V) for the targets' positions (already shifted).
        targets: (N, T) token ids, -100 where no loss is taken.
        teacher_logits: Teacher logits (N, T, V), or ``None`` for no distillation.
        alpha: Weight of the distillation term: ``(1 - alpha) * CE + alpha * sum_t H(teacher_t, student_t)``.

    Returns:
        (N,) losses, each summed over the answer's tokens (longer answers weigh more, as the official loss).
    """
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=IGNORE).sum(1)
    if teacher_logits is None:
        return nll
    soft = teacher_logits.softmax(dim=-1)
    distill = -(soft * logits.log_softmax(dim=-1)).sum(-1)  # (N, T)
    distill = (distill * (targets != IGNORE)).sum(1)
    return (1 - alpha) * nll + alpha * distill


def weighted_question_loss(losses: Tensor, weights: Tensor, num_questions: int) -> Tensor:
    """``sum(weights * losses) / num_questions`` (the official normaliser: questions, not answers)."""
    return (weights * losses).sum() / num_questions


# -- the objective ------------------------------------------------------------------------------------------
class VQAObjective:
    """Computes ``vqa_loss`` for one batch (spec §2.6).

    Args:
        pad_id: Padding id of the answers (no loss on it).

    Distillation follows the model (``model.distill``: built with teachers or not).
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, model: ALBEFVQA, batch: VQABatch, alpha: float) -> dict[str, Tensor]:
        """``{"vqa_loss": scalar}``; with distillation, one EMA step of the teachers happens first."""
        if batch.answer is None:
            raise ValueError("a VQA training batch needs answers (got a test batch)")
        answer, question = batch.answer, batch.question
        states = model.encode_question(batch.image, question.input_ids, question.attention_mask)
        owner = torch.arange(len(batch.k), device=states.device).repeat_interleave(
            torch.tensor(batch.k, device=states.device)
        )  # question of each answer row
        teacher = self.teacher_logits(model, batch, owner) if model.distill else None
        logits = model.decoder_logits(
            answer.input_ids, answer.attention_mask, states[owner], question.attention_mask[owner]
        )[:, :-1]
        losses = per_answer_loss(logits, answer_targets(answer.input_ids, self.pad_id), teacher, alpha)
        return {"vqa_loss": weighted_question_loss(losses, batch.weights, len(batch.k))}

    @staticmethod
    @torch.no_grad()
    def teacher_logits(model: ALBEFVQA, batch: VQABatch, owner: Tensor) -> Tensor:
        """EMA step, then the teachers' shifted decoder logits (N, La-1, V) for every answer row."""
        model.update_momentum()
        assert batch.answer is not None
        question = batch.question
        image = model.visual_encoder_m(batch.image)
        states = model.text_encoder_m.forward_multimodal(question.input_ids, question.attention_mask, image)
        hidden = model.text_decoder_m.forward_multimodal(
            batch.answer.input_ids, batch.answer.attention_mask, states[owner], question.attention_mask[owner]
        )
        return model.lm_head_m(hidden)[:, :-1]


# -- data and evaluation splits -----------------------------------------------------------------------------
def vqa_roots(cfg: ExperimentConfig) -> dict[str, Path]:
    """Image root per record ``dataset``: ``vqa`` -> ``data.vqa_root``, ``vg`` -> ``data.vg_root``."""
    return {"vqa": data_path(cfg.data, cfg.data.vqa_root), "vg": data_path(cfg.data, cfg.data.vg_root)}


def split_file(cfg: ExperimentConfig, split: str) -> Path:
    """The ALBEF-format questions file of ``split`` (``test``: ``data.test_file``, ``val``: ``data.val_file``).

    Raises:
        ValueError: Unknown split, or the config names no file for it.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown VQA split {split!r}; valid: {', '.join(SPLITS)}")
    name = cfg.data.test_file if split == "test" else cfg.data.val_file
    if not name:
        raise ValueError(f"the config names no {split} file (data.{split}_file)")
    return data_path(cfg.data, name)


def vqa_split(
    cfg: ExperimentConfig,
    split: str,
    annotations: str | Path | None = None,
    questions: str | Path | None = None,
) -> VQASplit:
    """The questions of ``split`` with the answer list and, where available, ground truth to score.

    Ground truth, first found: ``annotations`` (official VQA v2 file, checked against ``questions`` when
    given); ``data.test_annotations`` for the test split; the annotators' answers of the records themselves
    (``vqa_val.json`` carries them); none (the evaluation server scores test-dev/test-std).

    Raises:
        ValueError: The split has no file, or the config names no answer list.
        DataError: A malformed file.
    """
    path = split_file(cfg, split)
    if not cfg.data.answer_list:
        raise ValueError("the config names no answer list (data.answer_list)")
    records: list[VQARecord] = read_vqa_test(path) if split == "test" else read_vqa_train(path)
    if annotations is None and split == "test" and cfg.data.test_annotations:
        annotations = data_path(cfg.data, cfg.data.test_annotations)
    truths = read_vqa_annotations(annotations, questions) if annotations else ground_truth_of(records)
    return VQASplit(
        name=split,
        records=records,
        roots=vqa_roots(cfg),
        answer_list=read_answer_list(data_path(cfg.data, cfg.data.answer_list)),
        source=str(path),
        truths=truths,
    )


def build_evaluator(
    cfg: ExperimentConfig,
    split: VQASplit,
    tokenizer: TextTokenizer,
    precision: Precision,
    ranking: RankingOptions | None = None,
    world: World | None = None,
) -> VQAEvaluator:
    """A :class:`VQAEvaluator` with the config's resolution, test batch size, word limit and ``k_test``."""
    loader = LoaderOptions(
        image_res=cfg.model.vision.image_res,
        batch_size=cfg.data.batch_size_test,
        max_words=cfg.eval.max_question_words,
        num_workers=cfg.data.num_workers,
        bad_images=cfg.data.bad_images,
        world=world or World(),
    )
    return VQAEvaluator(split, tokenizer, precision, loader, ranking or RankingOptions(k=cfg.eval.k_test))


class VQATask(Task):
    """VQA finetuning on ``data.train_files`` (``vqa_train/val.json``, ``vg_qa.json``); crops of scale
    (0.5, 1.0). Validation each epoch only when ``data.val_file`` names a file with annotator answers (the
    official recipe trains on train+val and has none); it selects ``best.pt`` by ``overall`` accuracy."""

    def train_dataset(self) -> Dataset[Any]:
        transform = train_transform(self.cfg.data, self.cfg.model.vision.image_res)
        return self.train_files_dataset(read_vqa_train, VQADataset, transform, roots=vqa_roots(self.cfg))

    def collator(self) -> Callable[[list[Any]], Any]:
        return VQACollator(self.tokenizer, TextPolicy(max_length=self.cfg.data.max_tokens_train))

    def objective(self) -> Objective:
        objective = VQAObjective(self.tokenizer.pad_token_id)
        return objective  # type: ignore[return-value]  # narrower model/batch types

    selection = SELECT_METRIC
    help = "VQA answer generation (weighted answers, momentum distillation)"
    finetune_description = FINETUNE_DESCRIPTION
    evaluate_description = EVALUATE_DESCRIPTION
    finetune_options = (
        Option(
            "--inactive-distill",
            "distillation weight 0 with the teachers still EMA-updated, as the released vqa.pth was trained "
            "(sets model.alpha=0)",
            switch=True,
            override="model.alpha=0.0",
        ),
        *RANKING_OPTIONS,
    )
    evaluate_options = (
        Option("--annotations", "official VQA v2 annotations to score with", metavar="A.json"),
        Option("--questions", "the matching VQA v2 questions file (checked)", metavar="Q.json"),
        *RANKING_OPTIONS,
        ROUNDING_OPTION,
        Option(
            "--resume",
            "continue a killed evaluation from the answers it saved (<output-dir>/.partial/); the result file "
            "equals an uninterrupted run's",
            switch=True,
        ),
        Option("--save-every", f"questions answered between two saves (default: {SAVE_EVERY})", type=int),
    )
    report_dataset = "vqa_v2"

    def evaluator(
        self,
        split: str,
        precision: Precision,
        *,
        k: int | None = None,
        answer_scoring: str = "official",
        rank_chunk_size: int | None = None,
        rank_budget_mb: float | None = None,
        annotations: str | None = None,
        questions: str | None = None,
        rounding: str = "python3",
        checkpoint: str | Path | None = None,
        work_dir: Path | None = None,
        resume: bool = False,
        save_every: int | None = None,
        **unused: Any,
    ) -> VQAEvaluator:
        """Answer ranking (``k`` answers per question, default ``eval.k_test``) on ``val`` or ``test``, scored
        when annotated (``annotations``, checked against ``questions``). With ``checkpoint`` and ``work_dir``
        the answers are saved every ``save_every`` questions; ``resume`` continues from them."""
        del unused  # options of the other steps (``inactive_distill``)
        if questions and not annotations:
            raise ConfigError("--questions only checks --annotations; give both")
        try:
            chosen = vqa_split(self.cfg, split, annotations, questions)
        except ValueError as err:  # a config without the split's file or answer list
            raise ConfigError(str(err)) from err
        ranking = RankingOptions(k or self.cfg.eval.k_test, answer_scoring, rank_chunk_size, rank_budget_mb)  # type: ignore[arg-type]
        evaluator = build_evaluator(self.cfg, chosen, self.tokenizer, precision, ranking, current_world())
        evaluator.rounding = rounding  # type: ignore[assignment]
        if checkpoint is not None and work_dir is not None:
            identity = [file_sha256(checkpoint), to_dict(self.cfg.model), chosen.source, asdict(ranking)]
            key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
            every = max(1, (save_every or SAVE_EVERY) // self.cfg.data.batch_size_test)
            path = work_dir / f"rank{current_world().rank}.pt"
            evaluator.partial = PartialAnswers(path, key, every, resume)
        elif resume:
            raise ConfigError("--resume needs the evaluation of a --checkpoint file")
        return evaluator

    def output_files(self, split: str, out: Path, **options: Any) -> list[Path]:
        return [out / f"vqa_result_{split}.json"]

    def sample_records(self, result: EvalResult, split: str) -> list[dict[str, Any]]:
        """Every question's answer, its ranked answers with probabilities and, with ground truth, the
        annotators' answers and its accuracy."""
        from albef.evaluation.samples import vqa_samples

        out = result.outputs
        truths = out.get("truths")
        accuracy = out.get("accuracy")
        return vqa_samples(
            out["answers"],
            out["ranked"],
            {t.question_id: t.answers for t in truths} if truths else None,
            accuracy.per_question if accuracy is not None else None,
        )

    def write_outputs(self, result: EvalResult, split: str, out: Path, **options: Any) -> None:
        """The evaluation-server file ``vqa_result_<split>.json``, and the synthetic world's majority-answer
        baseline in the report."""
        path = write_result_file(
            out / f"vqa_result_{split}.json", result.outputs["answers"], result.outputs["question_ids"]
        )
        result.extra["result_file"] = str(path)
        baseline = majority_baseline(self.cfg, split)
        if baseline is not None:
            result.extra["majority_baseline"] = baseline


def majority_baseline(cfg: ExperimentConfig, split: str) -> dict[str, float] | None:
    """The synthetic world's majority-answer accuracy on its test split, in percent (``None`` elsewhere).

    ``overall``: always the most common training answer; per answer type: that type's most common answer
    (the world's ``manifest.json``, ``chance.vqa_test``).
    """
    manifest = data_path(cfg.data, "manifest.json")
    if not cfg.data.synthetic_size or split != "test" or not manifest.is_file():
        return None
    chance = json.loads(manifest.read_text(encoding="utf-8")).get("chance", {}).get("vqa_test")
    if not chance:
        return None
    types = {k: 100 * v["accuracy"] for k, v in chance.items() if isinstance(v, dict)}
    return {"overall": 100 * chance["overall"], **types}


TASKS.add("vqa", VQATask, "VQA: question encoder + answer decoder, weighted answers, distillation")
