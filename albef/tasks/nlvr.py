"""Text assignment (TA) pretraining, NLVR² and SNLI-VE finetuning: data, objectives, validation.

* ``nlvr_pretrain`` (spec §2.7): every caption is shown with two images of its batch and the model says
  which one it describes (0: the first, 1: the second, 2: neither). The partners are drawn from the
  image-image similarity of the batch, so that they are hard; an image is never paired with itself.
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
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from albef.data.collate import (
    ImageTextBatch,
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
from albef.engine.precision import Precision
from albef.engine.trainer import Objective
from albef.evaluation.classify import NLVREvaluator, VEEvaluator
from albef.evaluation.nlvr_eval import example_identifiers
from albef.losses import soft_cross_entropy
from albef.models.classify import ALBEFNLVR, ALBEFVE, ALBEFTextAssignment
from albef.tasks.base import TASKS, Task
from albef.tasks.contrastive import check_strategy
from albef.tasks.data import data_path, train_transform
from albef.tasks.pretrain import PretrainTask

TA_TEMPERATURE = 0.07
"""Temperature of the partner-sampling similarity: a constant in the official code, not the model's ``temp``."""
TA_FIRST, TA_SECOND, TA_NEITHER = 0, 1, 2
"""Text-assignment classes: the caption describes the first image, the second, or neither."""
TA_MIN_BATCH = 3
"""The "neither" class needs two partners other than the caption's own image."""

Split = Literal["val", "test"]
SPLIT_ALIASES: dict[str, Split] = {"val": "val", "dev": "val", "test": "test"}
"""``--split`` names -> the config file they select (``dev`` is NLVR²'s and SNLI-VE's name for val)."""


# -- text assignment -----------------------------------------------------------------------------------------
def partner_weights(image_feat: Tensor, temperature: float = TA_TEMPERATURE) -> Tensor:
    """Sampling weights of the partner images: ``softmax(z z^T / t)`` row-wise, diagonal set to 0.

    Args:
        image_feat: (B, E) L2-normalised image features.
        temperature: Softmax temperature.

    Returns:
        (B, B) float32 weights; row ``b`` sums to less than 1 and is 0 at ``b``.
    """
    z = image_feat.float()
    weights = F.softmax(z @ z.T / temperature, dim=1)
    return weights.fill_diagonal_(0.0)


@dataclass
class ImagePairs:
    """Which images fill the two slots of each caption, and the TA class.

    Attributes:
        first: (B,) index (in the batch) of the first image.
        second: (B,) index of the second image.
        labels: (B,) :data:`TA_FIRST`, :data:`TA_SECOND` or :data:`TA_NEITHER`.
    """

    first: Tensor
    second: Tensor
    labels: Tensor

    def to(self, device: torch.device) -> ImagePairs:
        """The same pairs on ``device``."""
        return ImagePairs(self.first.to(device), self.second.to(device), self.labels.to(device))


def sample_image_pairs(weights: Tensor) -> ImagePairs:
    """Draw the image pair of every caption as the official code, row by row on the default generator.

    For caption ``b``: with probability 2/3 one partner ``p ~ weights[b]`` and, with probability 1/2 each,
    ``(b, p)`` labelled first or ``(p, b)`` labelled second; otherwise two distinct partners ``(p1, p2)``
    labelled neither. The draws are ``rand``, ``multinomial``, ``rand`` (or ``rand``, ``multinomial`` of 2)
    per row, in row order, so that a seeded run reproduces the official pairs on the CPU.

    Args:
        weights: (B, B) :func:`partner_weights` (zero diagonal), B >= 3.
    """
    size = weights.shape[0]
    if size < TA_MIN_BATCH:
        raise ValueError(f"text assignment needs at least {TA_MIN_BATCH} images per batch, got {size}")
    weights = weights.detach().float().cpu()
    first, second, labels = [], [], []
    for b in range(size):
        if torch.rand(1) > 1 / 3:
            partner = int(torch.multinomial(weights[b], 1))
            pair, label = ((b, partner), TA_FIRST) if torch.rand(1) > 0.5 else ((partner, b), TA_SECOND)
        else:
            p1, p2 = torch.multinomial(weights[b], 2).tolist()
            pair, label = (p1, p2), TA_NEITHER
        first.append(pair[0])
        second.append(pair[1])
        labels.append(label)
    return ImagePairs(torch.tensor(first), torch.tensor(second), torch.tensor(labels))


class TextAssignmentObjective:
    """Cross-entropy of the 3-way TA head on pairs drawn from the batch (logged: ``ta_accuracy``).

    Args:
        partners: ``hard`` (official): partners drawn by image-image similarity (:func:`partner_weights`);
            ``random``: uniformly among the other images of the batch (``model.ta_partners``), for captions so generic that a similar image is often also
            described by them (the label would then be wrong). The draws are the same calls either way.
    """

    def __init__(self, partners: str = "hard") -> None:
        check_strategy(partners, "partner")
        self.partners = partners

    def __call__(self, model: ALBEFTextAssignment, batch: ImageTextBatch, alpha: float) -> dict[str, Tensor]:
        """``ta_loss`` and the batch accuracy of the head."""
        embeds = model.visual_encoder(batch.image)  # (B, 1+N, D)
        with torch.no_grad():
            if self.partners == "hard":
                feat = F.normalize(model.vision_proj(embeds[:, 0]).float(), dim=-1)
                weights = partner_weights(feat)
            else:
                size = embeds.shape[0]
                weights = torch.ones(size, size).fill_diagonal_(0.0)
            pairs = sample_image_pairs(weights).to(embeds.device)
        ids, mask = batch.text.input_ids, batch.text.attention_mask
        logits = model.logits(embeds[pairs.first], embeds[pairs.second], ids, mask)  # (B, 3)
        return {
            "ta_loss": F.cross_entropy(logits, pairs.labels),
            "ta_accuracy": (logits.argmax(dim=1) == pairs.labels).float().mean().detach(),
        }


class TextAssignmentTask(PretrainTask):
    """TA pretraining on the pretraining data and batches (caption lists, crops of scale (0.2, 1.0)); only
    the objective differs, and the TA model has no teachers or queue."""

    def objective(self) -> Objective:
        return TextAssignmentObjective(self.cfg.model.ta_partners)  # type: ignore[return-value]

    def check_model(self, model: nn.Module, global_batch: int) -> None:
        if self.cfg.data.batch_size_train < TA_MIN_BATCH:
            raise ValueError(
                f"text assignment draws two partner images per caption from its batch: "
                f"data.batch_size_train must be at least {TA_MIN_BATCH}, got {self.cfg.data.batch_size_train}"
            )


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

    def split_file(self, split: str) -> str:
        """The annotation file of ``split`` (``dev``/``val`` or ``test``) from the config."""
        if split not in SPLIT_ALIASES:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_ALIASES)}")
        which = SPLIT_ALIASES[split]
        name = self.cfg.data.val_file if which == "val" else self.cfg.data.test_file
        if not name:
            raise ValueError(f"the config names no data.{which}_file for split {split!r}")
        return str(data_path(self.cfg.data, name))

    dataset_type: type[NLVRDataset] | type[VEDataset]
    """The task's dataset class (both take the same arguments)."""

    @abstractmethod
    def read(self, path: str) -> list[Any]:
        """The records of one annotation file."""

    def dataset(self, path: str, transform: Any) -> Dataset[Any]:
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

    def eval_loader(self, path: str) -> Any:
        """An ordered loader over one annotation file (test transform)."""
        data = self.cfg.data
        dataset = self.dataset(path, build_test_transform(self.cfg.model.vision.image_res))
        collate = self.make_collator(TextPolicy(max_length=data.max_tokens_eval))
        return build_loader(dataset, data.batch_size_test, collate, train=False, num_workers=data.num_workers)

    @abstractmethod
    def make_collator(self, policy: TextPolicy) -> Callable[[list[Any]], Any]:
        """The task's collator with a text policy."""

    def collator(self) -> Callable[[list[Any]], Any]:
        return self.make_collator(TextPolicy(max_length=self.cfg.data.max_tokens_train))

    selection = "accuracy"


class NLVRTask(_ClassificationTask):
    """NLVR² finetuning (``nlvr_train.json``), validated on dev: accuracy and consistency."""

    def make_collator(self, policy: TextPolicy) -> PairCollator:
        return PairCollator(self.tokenizer, policy)

    dataset_type = NLVRDataset

    def read(self, path: str) -> list[Any]:
        return read_nlvr_split(path)

    def objective(self) -> Objective:
        return NLVRObjective()  # type: ignore[return-value]  # narrower model/batch types

    def evaluator(self, split: str, precision: Precision) -> NLVREvaluator:
        path = self.split_file(split)
        loader = self.eval_loader(path)
        records: list[NLVRRecord] = loader.dataset.records
        identifiers, source = example_identifiers(records)
        labels = [int(r.label) for r in records]
        return NLVREvaluator(loader, labels, identifiers, precision, identifier_source=source)


class VETask(_ClassificationTask):
    """SNLI-VE finetuning (``ve_train.json``), validated on dev: accuracy overall and per class."""

    def make_collator(self, policy: TextPolicy) -> LabelledCollator:
        return LabelledCollator(self.tokenizer, policy)

    dataset_type = VEDataset

    def read(self, path: str) -> list[Any]:
        return read_ve(path)

    def objective(self) -> Objective:
        return VEObjective()  # type: ignore[return-value]  # narrower model/batch types

    def evaluator(self, split: str, precision: Precision) -> VEEvaluator:
        loader = self.eval_loader(self.split_file(split))
        return VEEvaluator(loader, [r.label for r in loader.dataset.records], precision)


TASKS.add("nlvr_pretrain", TextAssignmentTask, "text assignment: which of two images a caption describes")
TASKS.add("nlvr", NLVRTask, "NLVR2: is the statement true of the image pair (distilled 2-way head)")
TASKS.add("ve", VETask, "SNLI-VE: entailment / neutral / contradiction (distilled 3-way head)")
