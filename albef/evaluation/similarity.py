"""Retrieval step 2 of 5, ITC similarity: ``image_feat @ text_feat.T``, without temperature (the official
ranking), over the whole split, computed on the evaluation device (the top-k of step 3 runs there too)."""

from __future__ import annotations

import torch
from torch import Tensor

from albef.evaluation.encode import RetrievalFeatures
from albef.reporting.measure import StageTimer


def itc_similarity(
    features: RetrievalFeatures, timer: StageTimer | None = None, device: torch.device | None = None
) -> Tensor:
    """The ITC matrix (N_i, N_t) of the split's features, on ``device`` (default: where the features are;
    timed as ``itc_similarity`` with a timer)."""
    image, text = features.image_feat, features.text_feat
    if device is not None:
        image, text = image.to(device), text.to(device)
    if timer is None:
        return image @ text.T
    with timer.stage("itc_similarity", items=image.shape[0] * text.shape[0], item="pair"):
        return image @ text.T
