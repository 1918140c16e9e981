"""Pure metric functions on score tensors (chunked so memory stays bounded).

Retrieval ranks use one documented tie rule: among equal scores the candidate with the **lower index ranks
first** (a stable descending sort). The official ``itm_eval`` breaks ties with numpy's unstable sort, so its
result on exact ties depends on the machine; ties cannot change R@1/5/10 of the official protocol, where
only cells outside the top k (k >= 10) share the fill value -100.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

RECALL_KS = (1, 5, 10)


def ranks_of_targets(scores: Tensor, rows: Tensor, cols: Tensor, chunk: int = 1024) -> Tensor:
    """0-based rank of ``scores[rows[n], cols[n]]`` within its row, ties to the lower column index.

    Args:
        scores: (R, C) score matrix.
        rows: (N,) row of each target.
        cols: (N,) column of each target.
        chunk: Targets processed per step (bounds memory to ``chunk * C``).

    Returns:
        (N,) int64 ranks.
    """
    out = torch.empty(rows.shape[0], dtype=torch.long)
    positions = torch.arange(scores.shape[1], device=scores.device)
    for start in range(0, rows.shape[0], chunk):
        r, c = rows[start : start + chunk], cols[start : start + chunk]
        row_scores = scores[r]  # (n, C)
        target = row_scores.gather(1, c.view(-1, 1))
        greater = (row_scores > target).sum(dim=1)
        ties_before = ((row_scores == target) & (positions.view(1, -1) < c.view(-1, 1))).sum(dim=1)
        out[start : start + chunk] = (greater + ties_before).cpu()
    return out


def _recall(ranks: Tensor, k: int) -> float:
    return 100.0 * float((ranks < k).float().mean())


def retrieval_metrics(
    scores_i2t: Tensor, scores_t2i: Tensor, img2txt: Sequence[Sequence[int]], txt2img: Sequence[int]
) -> dict[str, float]:
    """The official retrieval metrics (``itm_eval``), plus mean and median ranks.

    Image->text: an image's rank is the best (smallest) rank among all its captions (any number per image).
    Text->image: the rank of the caption's single image.

    Args:
        scores_i2t: (N_images, N_texts).
        scores_t2i: (N_texts, N_images).
        img2txt: Caption ids of each image.
        txt2img: Image id of each caption.

    Returns:
        ``txt_r1, txt_r5, txt_r10, txt_r_mean, img_r1, img_r5, img_r10, img_r_mean, r_mean`` (percent), and
        ``txt_mean_rank, txt_median_rank, img_mean_rank, img_median_rank`` (1-based ranks).
    """
    pair_img = torch.tensor([i for i, texts in enumerate(img2txt) for _ in texts], dtype=torch.long)
    pair_txt = torch.tensor([t for texts in img2txt for t in texts], dtype=torch.long)
    pair_ranks = ranks_of_targets(scores_i2t, pair_img.to(scores_i2t.device), pair_txt.to(scores_i2t.device))
    img_ranks = torch.full((len(img2txt),), torch.iinfo(torch.long).max, dtype=torch.long)
    img_ranks = img_ranks.scatter_reduce(0, pair_img, pair_ranks, reduce="amin")
    txt_rows = torch.arange(len(txt2img), device=scores_t2i.device)
    txt_ranks = ranks_of_targets(scores_t2i, txt_rows, torch.tensor(list(txt2img), device=scores_t2i.device))
    out: dict[str, float] = {}
    for prefix, ranks in (("txt", img_ranks), ("img", txt_ranks)):
        for k in RECALL_KS:
            out[f"{prefix}_r{k}"] = _recall(ranks, k)
        out[f"{prefix}_r_mean"] = sum(out[f"{prefix}_r{k}"] for k in RECALL_KS) / len(RECALL_KS)
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    for prefix, ranks in (("txt", img_ranks), ("img", txt_ranks)):
        out[f"{prefix}_mean_rank"] = float(ranks.float().mean()) + 1
        out[f"{prefix}_median_rank"] = float(ranks.float().median()) + 1
    return out
