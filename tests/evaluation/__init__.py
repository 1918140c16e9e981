"""Tests of ``albef.evaluation``: retrieval metrics, the batched re-ranking, the evaluator and its cache.

The re-ranking tests use the ``albef_tiny`` retrieval model with its weights redrawn at a larger scale
(:func:`spread_model`), so that ITM logits differ clearly between pairs, and random features whose texts
have every length from 3 to 30 tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from albef.models import create_model, model_preset
from albef.models.albef import ALBEFRetrieval

TEXT_LEN = 30


def spread_model(seed: int = 0) -> ALBEFRetrieval:
    """The tiny retrieval model (eval mode) with matrices ~ N(0, 0.3^2) and vectors ~ N(0, 0.1^2)."""
    torch.manual_seed(seed)
    model: ALBEFRetrieval = create_model("retrieval", model_preset("albef_tiny")).eval()  # type: ignore[assignment]
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.dim() > 1 else 0.1)
    return model


def random_features(n_images: int, n_texts: int, seed: int = 0) -> dict[str, Tensor]:
    """Image tokens (N_i, 10, 32), text states (N_t, 30, 32), prefix masks of lengths 3-30, and ITC sims."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, TEXT_LEN + 1, (n_texts,), generator=gen)
    return {
        "image_embeds": torch.randn(n_images, 10, 32, generator=gen),
        "text_states": torch.randn(n_texts, TEXT_LEN, 32, generator=gen),
        "text_mask": (torch.arange(TEXT_LEN)[None] < lengths[:, None]).long(),
        "sims": torch.randn(n_images, n_texts, generator=gen),
    }
