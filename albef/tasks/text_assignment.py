"""Text assignment (TA) pretraining for NLVR² (spec §2.7), task ``nlvr_pretrain``.

Every caption is shown with two images of its batch and the model says which one it describes (0: the first,
1: the second, 2: neither). The partners are drawn from the image-image similarity of the batch, so that they
are hard; an image is never paired with itself. The passes run in the official order: student forward, EMA
step, teacher forward (spec §7 Q5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from albef.data.collate import ImageTextBatch
from albef.engine.trainer import Objective
from albef.models.classify import ALBEFTextAssignment
from albef.tasks.base import TASKS
from albef.tasks.contrastive import check_strategy
from albef.tasks.pretrain import PretrainTask

TA_TEMPERATURE = 0.07
"""Temperature of the partner-sampling similarity: a constant in the official code, not the model's ``temp``."""
TA_FIRST, TA_SECOND, TA_NEITHER = 0, 1, 2
"""Text-assignment classes: the caption describes the first image, the second, or neither."""
TA_MIN_BATCH = 3
"""The "neither" class needs two partners other than the caption's own image."""


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

    unused_parameters = True  # the contrastive projections and temperature only pick the partner images

    def objective(self) -> Objective:
        return TextAssignmentObjective(self.cfg.model.ta_partners)  # type: ignore[return-value]

    def check_model(self, model: nn.Module, global_batch: int) -> None:
        if self.cfg.data.batch_size_train < TA_MIN_BATCH:
            raise ValueError(
                f"text assignment draws two partner images per caption from its batch: "
                f"data.batch_size_train must be at least {TA_MIN_BATCH}, got {self.cfg.data.batch_size_train}"
            )


TASKS.add("nlvr_pretrain", TextAssignmentTask, "text assignment: which of two images a caption describes")
