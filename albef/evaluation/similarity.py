"""Retrieval step 2 of 5, ITC similarity: ``image_feat @ text_feat.T``, without temperature (the official
ranking), over the whole split."""

from __future__ import annotations

from torch import Tensor

from albef.evaluation.encode import RetrievalFeatures
from albef.reporting.measure import StageTimer


def itc_similarity(features: RetrievalFeatures, timer: StageTimer | None = None) -> Tensor:
    """The ITC matrix (N_i, N_t) of the split's features (timed as ``itc_similarity`` with a timer)."""
    if timer is None:
        return features.image_feat @ features.text_feat.T
    n_img, n_txt = features.image_feat.shape[0], features.text_feat.shape[0]
    with timer.stage("itc_similarity", items=n_img * n_txt, item="pair"):
        return features.image_feat @ features.text_feat.T
