"""NLVR² and SNLI-VE finetuning: data, objectives, validation, evaluation outputs.

Text-assignment pretraining, the step before NLVR², is :mod:`albef.tasks.text_assignment`.

* ``nlvr``: two images, one statement, True (1) / False (0); ``ve``: one image, one hypothesis,
  entailment (2) / neutral (1) / contradiction (0). Both minimise ``(1 - alpha) * CE + alpha * soft CE``
  against the EMA teacher's probabilities (plain CE without distillation), and both validate after each
  epoch; ``best.pt`` is chosen by validation accuracy.

The passes run in the official order: student forward, EMA step, teacher forward (spec §7 Q5), so random
draws (dropout) happen in the same order.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Subset

from albef.checkpoint import load_checkpoint
from albef.data.collate import (
    LabelledBatch,
    LabelledCollator,
    PairBatch,
    PairCollator,
    TextPolicy,
)
from albef.data.datasets import EpochConcatDataset, NLVRDataset, VEDataset
from albef.data.formats import read_nlvr, read_nlvr_lil, read_ve
from albef.data.loaders import build_loader
from albef.data.records import NLVRRecord
from albef.data.transforms import build_test_transform
from albef.engine.determinism import seed_everything
from albef.engine.distributed import World, current_world
from albef.engine.precision import Precision
from albef.engine.trainer import Objective
from albef.errors import ConfigError
from albef.evaluation.base import EvalResult
from albef.evaluation.candidates import shard_rows
from albef.evaluation.classify import NLVREvaluator, VEEvaluator
from albef.evaluation.nlvr_eval import example_identifiers, write_predictions
from albef.fileio import atomic_torch_save
from albef.losses import soft_cross_entropy
from albef.models.builders import create_model
from albef.models.classify import ALBEFNLVR, ALBEFVE
from albef.tasks.base import TASKS, Option, Task
from albef.tasks.data import data_path, train_transform

FINETUNE_NLVR = """\
Finetune NLVR2 (spec §2.7) from a text-assignment checkpoint (albef pretrain-ta) or an NLVR2 checkpoint:
one ViT pass over both images, fusion layers alternating between them with shared key/value projections, an
MLP head on [CLS], distilled from the momentum model. Teachers absent from the checkpoint are copied from the
loaded weights; --parity-teacher keeps the official order instead (copied before loading, spec §7 Q14).
Each epoch is validated on data.val_file (accuracy, consistency); best.pt keeps the best accuracy, and the
test split is then evaluated with it: <output-dir>/nlvr_test_report.json and the predictions file
<output-dir>/nlvr_predictions_test.csv (identifier,True|False).
"""

FINETUNE_VE = """\
Finetune SNLI-VE (spec §2.8) from a pretraining or SNLI-VE checkpoint: a 3-way MLP head on the fused [CLS]
(0 contradiction, 1 neutral, 2 entailment), distilled from the momentum model with alpha from the first step.
Each epoch is validated on data.val_file; best.pt keeps the best accuracy and the test split is evaluated
with it: <output-dir>/ve_test_report.json (accuracy overall and per class).
"""

EVALUATE_NLVR = """\
Evaluate an NLVR2 checkpoint on the dev or test split of the config: accuracy and consistency (the share of
sentences all of whose image pairs are right, NLVR2's official metric). Splits are read in ALBEF's JSON or
lil-lab's JSON lines (*.jsonl). Writes <output-dir>/nlvr_<split>_report.json and the predictions file in
the official format (identifier,True|False); identifiers missing from ALBEF files are derived from the
lil-lab image names.
"""

EVALUATE_VE = """\
Evaluate an SNLI-VE checkpoint on the dev or test split of the config: accuracy overall and per class.
Writes <output-dir>/ve_<split>_report.json.
"""

Split = Literal["val", "test"]
SPLIT_ALIASES: dict[str, Split] = {"val": "val", "dev": "val", "test": "test"}
"""``--split`` names -> the config file they select (``dev`` is NLVR²'s and SNLI-VE's name for val)."""


# -- NLVR2 and SNLI-VE ---------------------------------------------------------------------------------------
def distilled_cross_entropy(logits: Tensor, targets: Tensor, teacher: Tensor | None, alpha: float) -> Tensor:
    """``(1 - alpha) * CE(logits, targets) + alpha * mean_b soft_CE(logits, softmax(teacher))``.

    Args:
        logits: (B, C) student logits.
        targets: (B,) class indices.
        teacher: (B, C) teacher logits (no grad), or ``None`` for plain cross-entropy.
        alpha: Distillation weight.
    """
    hard = F.cross_entropy(logits, targets)
    if teacher is None:
        return hard
    soft = soft_cross_entropy(logits, F.softmax(teacher, dim=1)).mean()
    return (1 - alpha) * hard + alpha * soft


class ClassifierObjective(ABC):
    """Distilled classification for a model with ``logits``/``logits_m``/``update_momentum``/``distill``.

    Subclasses say which batch fields are the model's inputs (:meth:`inputs`).
    """

    @abstractmethod
    def inputs(self, batch: Any) -> tuple[Tensor, ...]:
        """The positional inputs of ``model.logits`` taken from ``batch``."""

    def __call__(
        self, model: ALBEFNLVR | ALBEFVE, batch: PairBatch | LabelledBatch, alpha: float
    ) -> dict[str, Tensor]:
        """``cls_loss`` and the logged batch ``accuracy``."""
        inputs = self.inputs(batch)
        logits = model.logits(*inputs)
        teacher = None
        if model.distill:
            model.update_momentum()  # official order: after the student pass, before the teacher's
            teacher = model.logits_m(*inputs)
        return {
            "cls_loss": distilled_cross_entropy(logits, batch.label, teacher, alpha),
            "accuracy": (logits.argmax(dim=1) == batch.label).float().mean().detach(),
        }


class NLVRObjective(ClassifierObjective):
    """NLVR²: the two images and the statement of a :class:`PairBatch`."""

    def inputs(self, batch: PairBatch) -> tuple[Tensor, ...]:
        return batch.image0, batch.image1, batch.text.input_ids, batch.text.attention_mask


class VEObjective(ClassifierObjective):
    """SNLI-VE: the image and the hypothesis of a :class:`LabelledBatch`."""

    def inputs(self, batch: LabelledBatch) -> tuple[Tensor, ...]:
        return batch.image, batch.text.input_ids, batch.text.attention_mask


def read_nlvr_split(path: str | os.PathLike[str]) -> list[NLVRRecord]:
    """An NLVR² split in either format: lil-lab JSON lines (``.jsonl``) or ALBEF's JSON list."""
    return read_nlvr_lil(path) if str(path).endswith(".jsonl") else read_nlvr(path)


class _ClassificationTask(Task):
    """Shared data plumbing of NLVR² and SNLI-VE: training set, evaluation splits, per-epoch validation."""

    splits = ("dev", "test")

    def split_file(self, split: str) -> str:
        """The annotation file of ``split`` (``dev``/``val`` or ``test``) from the config."""
        if split not in SPLIT_ALIASES:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLIT_ALIASES)}")
        which = SPLIT_ALIASES[split]
        name = self.cfg.data.val_file if which == "val" else self.cfg.data.test_file
        if not name:
            raise ConfigError(f"the config names no data.{which}_file for split {split!r}")
        return str(data_path(self.cfg.data, name))

    dataset_type: type[NLVRDataset] | type[VEDataset]
    """The task's dataset class (both take the same arguments)."""

    @abstractmethod
    def read(self, path: str) -> list[Any]:
        """The records of one annotation file."""

    def dataset(self, path: str, transform: Any) -> NLVRDataset | VEDataset:
        """The dataset of one annotation file."""
        data = self.cfg.data
        return self.dataset_type(
            self.read(path),
            data_path(data, data.image_root),
            transform,
            max_words=data.max_words,
            source=path,
            seed=self.cfg.runtime.seed,
            bad_images=data.bad_images,
        )

    def train_dataset(self) -> Dataset[Any]:
        transform = train_transform(self.cfg.data, self.cfg.model.vision.image_res)
        return EpochConcatDataset(
            [self.dataset(str(data_path(self.cfg.data, n)), transform) for n in self.cfg.data.train_files]
        )

    def eval_shard(self, path: str) -> tuple[Any, list[Any], World, int]:
        """The split's records, and an ordered loader (test transform) over this rank's contiguous block of
        them, starting at the returned position (the whole split in a single process)."""
        data = self.cfg.data
        dataset = self.dataset(path, build_test_transform(self.cfg.model.vision.image_res))
        records = list(dataset.records)
        world = current_world()
        rows = shard_rows(len(records), world)
        start = int(rows[0]) if rows.numel() else len(records)
        part = Subset(dataset, rows.tolist()) if world.distributed else dataset
        collate = self.make_collator(TextPolicy(max_length=data.max_tokens_eval))
        loader = build_loader(part, data.batch_size_test, collate, train=False, num_workers=data.num_workers)
        return loader, records, world, start

    @abstractmethod
    def make_collator(self, policy: TextPolicy) -> Callable[[list[Any]], Any]:
        """The task's collator with a text policy."""

    def collator(self) -> Callable[[list[Any]], Any]:
        return self.make_collator(TextPolicy(max_length=self.cfg.data.max_tokens_train))

    selection = "accuracy"


class NLVRTask(_ClassificationTask):
    """NLVR² finetuning (``nlvr_train.json``), validated on dev: accuracy and consistency."""

    help = "NLVR2 two-image classification (accuracy + consistency, predictions CSV)"
    finetune_description = FINETUNE_NLVR
    evaluate_description = EVALUATE_NLVR
    finetune_options = (
        Option(
            "--parity-teacher",
            "teachers keep their pre-load weights, as NLVR.py (copy_params before loading the checkpoint)",
            switch=True,
        ),
    )
    evaluate_options = (
        Option(
            "--predictions",
            "predictions CSV (default: <output-dir>/nlvr_predictions_<split>.csv)",
            metavar="FILE",
        ),
    )
    report_dataset = "nlvr2"

    def make_collator(self, policy: TextPolicy) -> PairCollator:
        return PairCollator(self.tokenizer, policy)

    dataset_type = NLVRDataset

    def read(self, path: str) -> list[Any]:
        return read_nlvr_split(path)

    def objective(self) -> Objective:
        return NLVRObjective()  # type: ignore[return-value]  # narrower model/batch types

    def evaluator(self, split: str, precision: Precision, **options: Any) -> NLVREvaluator:
        loader, records, world, start = self.eval_shard(self.split_file(split))
        identifiers, source = example_identifiers(cast(list[NLVRRecord], records))
        labels = [int(r.label) for r in records]
        return NLVREvaluator(loader, labels, identifiers, precision, source, world, start)

    def output_files(self, split: str, out: Path, **options: Any) -> list[Path]:
        return [Path(options.get("predictions") or out / f"nlvr_predictions_{split}.csv")]

    def sample_records(self, result: EvalResult, split: str) -> list[dict[str, Any]]:
        """Every example's identifier, logits, predicted and true label."""
        from albef.evaluation.samples import classification_samples

        out = result.outputs
        return classification_samples(
            out["logits"], out["labels"], ("False", "True"), out["identifiers"], out["evaluated"]
        )

    def write_outputs(self, result: EvalResult, split: str, out: Path, **options: Any) -> None:
        """The predictions CSV of the evaluated examples, in the official format (``identifier,True|False``)."""
        kept = [i for i, ok in enumerate(result.outputs["evaluated"]) if ok]
        path = write_predictions(
            self.output_files(split, out, **options)[0],
            [result.outputs["identifiers"][i] for i in kept],
            [result.outputs["predictions"][i] for i in kept],
        )
        result.extra["predictions_file"] = str(path)

    def initial_weights(self, checkpoint: str | None, out: Path, **options: Any) -> str | None:
        """With ``parity_teacher``: the official NLVR.py start, saved as ``<out>/parity_init.pt``: the model
        built after seeding (as training builds it), ``checkpoint`` loaded after ``copy_params``, the
        teachers' pre-load weights kept."""
        if not options.get("parity_teacher") or checkpoint is None:
            return checkpoint
        seed_everything(self.cfg.runtime.seed)
        model = create_model(self.cfg.task, self.cfg.model)
        load_checkpoint(model, self.cfg.task, checkpoint, parity=True)
        return str(atomic_torch_save({"model": model.state_dict()}, out / "parity_init.pt"))


class VETask(_ClassificationTask):
    """SNLI-VE finetuning (``ve_train.json``), validated on dev: accuracy overall and per class."""

    help = "SNLI-VE entailment classification (accuracy overall and per class)"
    finetune_description = FINETUNE_VE
    evaluate_description = EVALUATE_VE
    report_dataset = "snli_ve"

    def make_collator(self, policy: TextPolicy) -> LabelledCollator:
        return LabelledCollator(self.tokenizer, policy)

    dataset_type = VEDataset

    def read(self, path: str) -> list[Any]:
        return read_ve(path)

    def objective(self) -> Objective:
        return VEObjective()  # type: ignore[return-value]  # narrower model/batch types

    def evaluator(self, split: str, precision: Precision, **options: Any) -> VEEvaluator:
        loader, records, world, start = self.eval_shard(self.split_file(split))
        return VEEvaluator(loader, [r.label for r in records], precision, world, start)

    def sample_records(self, result: EvalResult, split: str) -> list[dict[str, Any]]:
        """Every example's logits, predicted and true class (``null`` for an example that was skipped)."""
        from albef.evaluation.classify import NO_PREDICTION, VE_CLASS_NAMES
        from albef.evaluation.samples import classification_samples

        out = result.outputs
        evaluated = [c != NO_PREDICTION for c in out["classes"].tolist()]
        return classification_samples(out["logits"], out["labels"], VE_CLASS_NAMES, evaluated=evaluated)


TASKS.add("nlvr", NLVRTask, "NLVR2: is the statement true of the image pair (distilled 2-way head)")
TASKS.add("ve", VETask, "SNLI-VE: entailment / neutral / contradiction (distilled 3-way head)")
