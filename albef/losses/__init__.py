"""ALBEF's training losses as pure functions on tensors (no model inside), each tested alone."""

from albef.losses.distill import soft_cross_entropy
from albef.losses.itc import contrastive_targets, itc_loss
from albef.losses.itm import NegativeSamples, itm_loss, negative_weights, sample_negatives
from albef.losses.mlm import mask_tokens, mlm_loss

__all__ = [
    "NegativeSamples",
    "contrastive_targets",
    "itc_loss",
    "itm_loss",
    "mask_tokens",
    "mlm_loss",
    "negative_weights",
    "sample_negatives",
    "soft_cross_entropy",
]
