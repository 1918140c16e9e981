"""The pretraining objective: ITC with momentum distillation and queue + ITM with hard negatives + MLM.

The order of the passes follows the official forward (spec §1.5, §2.1-2.3), so that with the same seed the
random draws (dropout, negatives, masks) happen in the same order.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from albef.data.collate import CaptionCollator, ImageTextBatch, TextPolicy
from albef.data.datasets import PretrainDataset
from albef.data.formats import read_negative_captions, read_pretrain
from albef.data.tokenizer import TextTokenizer
from albef.data.transforms import PRETRAIN_CROP_SCALE
from albef.engine.trainer import Objective
from albef.losses import mask_tokens, mlm_loss
from albef.losses.itm import NegativeSamples, Sampler, sample_negatives
from albef.models.albef import ALBEFPretrain
from albef.tasks.base import TASKS, Task
from albef.tasks.contrastive import ExtraPairs, ITCResult, contrastive_step, draw_negatives
from albef.tasks.data import data_path, train_transform

TEMP_RANGE = (0.001, 0.5)


class PretrainObjective:
    """Computes the three pretraining losses for one batch.

    Args:
        tokenizer: Gives the special ids and the vocabulary size for masking.
        mlm_probability: Token selection probability.
        legacy_mlm_axis: MLM distillation over the sequence axis (the released 2021 checkpoints).
        itm_negatives: ``hard`` (official) or ``random`` ITM negatives (see :func:`draw_negatives`).
        sample: How the negatives are drawn (:func:`~albef.losses.itm.sample_negatives`; the reference checks
            inject the official order).

    Distillation follows the model (``model.distill``, from ``model.distill`` of the config), the one place
    that decides it.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        mlm_probability: float = 0.15,
        legacy_mlm_axis: bool = False,
        itm_negatives: str = "hard",
        sample: Sampler = sample_negatives,
    ) -> None:
        self.mask_id, self.pad_id, self.cls_id = (
            tokenizer.mask_token_id,
            tokenizer.pad_token_id,
            tokenizer.cls_token_id,
        )
        self.vocab_size = tokenizer.vocab_size
        self.mlm_probability = mlm_probability
        self.sample = sample
        self.legacy_mlm_axis = legacy_mlm_axis
        self.itm_negatives = itm_negatives

    def __call__(self, model: ALBEFPretrain, batch: ImageTextBatch, alpha: float) -> dict[str, Tensor]:
        """Losses ``itc_loss``, ``itm_loss``, ``mlm_loss`` and the logged ``temp``."""
        with torch.no_grad():
            model.temp.clamp_(*TEMP_RANGE)
        extra = None
        if batch.extra_text is not None and batch.extra_rows is not None and batch.extra_labels is not None:
            extra = ExtraPairs(batch.extra_text, batch.extra_rows, batch.extra_labels)
        step = contrastive_step(
            model, batch.image, batch.text, alpha, self.draw, distill=model.distill, extra_pairs=extra
        )
        ids, mask = batch.text.input_ids, batch.text.attention_mask
        masked, labels = mask_tokens(
            ids, self.vocab_size, self.mask_id, self.pad_id, self.cls_id, self.mlm_probability
        )
        mlm = self.mlm(
            model, masked, labels, mask, step.image.embeds, step.image_m.embeds, alpha, model.distill
        )
        return {
            "itc_loss": step.itc.loss,
            "itm_loss": step.itm_loss,
            "mlm_loss": mlm,
            "temp": model.temp.detach(),
        }

    def draw(self, itc: ITCResult) -> NegativeSamples:
        """ITM negatives from the ITC similarities (``model.itm_negatives``, drawn by ``sample``)."""
        return draw_negatives(itc.sim_i2t, itc.sim_t2i, strategy=self.itm_negatives, sample=self.sample)

    def mlm(
        self,
        model: ALBEFPretrain,
        masked: Tensor,
        labels: Tensor,
        mask: Tensor,
        image_embeds: Tensor,
        image_embeds_m: Tensor,
        alpha: float,
        distill: bool = True,
    ) -> Tensor:
        """MLM loss with the teacher's soft targets (teacher pass first, as the official order)."""
        teacher = model.mlm_logits_m(masked, mask, image_embeds_m) if distill else None
        logits = model.mlm_logits(masked, mask, image_embeds)
        return mlm_loss(logits, labels, teacher, alpha, self.legacy_mlm_axis)


class PretrainTask(Task):
    """Pretraining on caption lists (``data.train_files``), crops of scale (0.2, 1.0)."""

    report_dataset = "pretrain"
    text_negatives = True

    def train_dataset(self) -> Dataset[Any]:
        transform = train_transform(self.cfg.data, self.cfg.model.vision.image_res, scale=PRETRAIN_CROP_SCALE)
        negatives = None
        if self.cfg.data.itm_text_negatives:
            negatives = read_negative_captions(data_path(self.cfg.data, self.cfg.data.itm_text_negatives))
        return self.train_files_dataset(
            read_pretrain, partial(PretrainDataset, negatives=negatives), transform
        )

    def collator(self) -> CaptionCollator:
        return CaptionCollator(self.tokenizer, TextPolicy(max_length=self.cfg.data.max_tokens_train))

    def objective(self) -> Objective:
        return PretrainObjective(  # type: ignore[return-value]  # narrower model/batch types
            self.tokenizer,
            self.cfg.model.mlm_probability,
            itm_negatives=self.cfg.model.itm_negatives,
        )


TASKS.add("pretrain", PretrainTask, "ITC + ITM + MLM pretraining")
