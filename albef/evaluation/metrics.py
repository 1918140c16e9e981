"""Pure metric functions on score tensors (chunked so memory stays bounded).

Retrieval ranks follow one documented, deterministic **tie rule**: among equal scores the candidate with the
**lower index ranks first** (``ties="lower_index_first"``, a stable descending sort). The official
``itm_eval`` ranks with numpy's unstable ``argsort(score)[::-1]``, so its result on exact ties depends on the
machine; on the machine that produced ``../shared/reference/official_tiny`` the higher index came first,
which ``ties="higher_index_first"`` reproduces. In the official protocol only the cells outside the top k
share a value (the -100 fill), so with k >= 10 the tie rule cannot change R@1/5/10; it can change the mean and
median ranks of targets left outside the top k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from albef.data.records import RetrievalEvalSet
from albef.evaluation.bootstrap import retrieval_intervals
from albef.reporting.schema import Metric

RECALL_KS = (1, 5, 10)
TieRule = Literal["lower_index_first", "higher_index_first"]
OFFICIAL_KEYS = (
    "txt_r1",
    "txt_r5",
    "txt_r10",
    "txt_r_mean",
    "img_r1",
    "img_r5",
    "img_r10",
    "img_r_mean",
    "r_mean",
)
"""The keys of the official ``itm_eval`` result, in its order (percent)."""
RERANK_FILL = -100.0
"""The official score of every cell outside a query's top k."""
RANK_KEYS = ("txt_mean_rank", "txt_median_rank", "img_mean_rank", "img_median_rank")
"""The rank statistics :func:`retrieval_metrics` adds (1-based ranks; lower is better)."""


def ranks_of_targets(
    scores: Tensor, rows: Tensor, cols: Tensor, chunk: int = 1024, ties: TieRule = "lower_index_first"
) -> Tensor:
    """0-based rank of ``scores[rows[n], cols[n]]`` within its row, equal scores ordered by ``ties``.

    Args:
        scores: (R, C) score matrix.
        rows: (N,) row of each target.
        cols: (N,) column of each target.
        chunk: Targets processed per step (bounds memory to ``chunk * C``).
        ties: Which of two equal scores ranks first (see the module docstring).

    Returns:
        (N,) int64 ranks on the CPU.
    """
    out = torch.empty(rows.shape[0], dtype=torch.long)
    positions = torch.arange(scores.shape[1], device=scores.device).view(1, -1)
    for start in range(0, rows.shape[0], chunk):
        r, c = rows[start : start + chunk], cols[start : start + chunk].view(-1, 1)
        row_scores = scores[r]  # (n, C)
        target = row_scores.gather(1, c)
        ahead = positions < c if ties == "lower_index_first" else positions > c
        tied_ahead = (row_scores == target) & ahead
        out[start : start + chunk] = ((row_scores > target).sum(dim=1) + tied_ahead.sum(dim=1)).cpu()
    return out


ScoreMatrix = Tensor | np.ndarray | Sequence[Sequence[float]]
"""A score matrix as a tensor, a numpy array (as the official ``itm_eval`` takes) or nested lists."""


def as_score_matrix(scores: ScoreMatrix, name: str = "scores") -> Tensor:
    """``scores`` as a 2-D floating tensor (tensors keep their device and dtype; numpy arrays are shared)."""
    if isinstance(scores, Tensor):
        out = scores
    elif isinstance(scores, np.ndarray):
        out = torch.from_numpy(np.ascontiguousarray(scores))
    else:
        out = torch.tensor(scores, dtype=torch.float64)
    if out.ndim != 2:
        raise ValueError(f"{name} must be a 2-D score matrix, got shape {tuple(out.shape)}")
    return out if out.is_floating_point() else out.double()


def _as_list(links: Any) -> list[Any]:
    """Ground-truth links as a list: the official dicts ``{index: value}`` (keys 0..n-1), arrays, lists."""
    if isinstance(links, Mapping):
        if sorted(links) != list(range(len(links))):
            raise ValueError("a links dict must have the keys 0..n-1 (one entry per image or text)")
        return [links[i] for i in range(len(links))]
    if isinstance(links, (np.ndarray, Tensor)):
        return links.tolist()
    return list(links)


def as_links(img2txt: Any, txt2img: Any) -> tuple[list[list[int]], list[int]]:
    """``img2txt`` and ``txt2img`` in any accepted form (lists, arrays, tensors, the official dicts) as lists
    of ints; an image given a single caption id gets a one-element list."""
    images = [[int(t)] if np.ndim(t) == 0 else [int(x) for x in t] for t in _as_list(img2txt)]
    return images, [int(i) for i in _as_list(txt2img)]


def _check_links(
    scores_i2t: Tensor, scores_t2i: Tensor, img2txt: Sequence[Sequence[int]], txt2img: Sequence[int]
) -> None:
    """Raise ``ValueError`` when the matrices and the ground-truth links disagree in size or range."""
    n_img, n_txt = len(img2txt), len(txt2img)
    if tuple(scores_i2t.shape) != (n_img, n_txt) or tuple(scores_t2i.shape) != (n_txt, n_img):
        raise ValueError(
            f"score matrices {tuple(scores_i2t.shape)} and {tuple(scores_t2i.shape)} do not fit "
            f"{n_img} images x {n_txt} texts"
        )
    if n_img == 0 or n_txt == 0:
        raise ValueError("retrieval metrics need at least one image and one text")
    for image, texts in enumerate(img2txt):
        if not texts:
            raise ValueError(f"image {image} has no caption: its text recall is undefined")
        if min(texts) < 0 or max(texts) >= n_txt:
            raise ValueError(f"image {image} lists caption ids outside [0, {n_txt})")
    if min(txt2img) < 0 or max(txt2img) >= n_img:
        raise ValueError(f"txt2img holds image ids outside [0, {n_img})")


def retrieval_ranks(
    scores_i2t: Tensor,
    scores_t2i: Tensor,
    img2txt: Sequence[Sequence[int]],
    txt2img: Sequence[int],
    ties: TieRule = "lower_index_first",
) -> tuple[Tensor, Tensor]:
    """0-based ranks of the ground truth: per image (best over its captions) and per text.

    Args:
        scores_i2t: (N_images, N_texts).
        scores_t2i: (N_texts, N_images).
        img2txt: Caption ids of each image (any non-zero number per image).
        txt2img: Image id of each caption.
        ties: The tie rule.

    Returns:
        Image->text ranks (N_images,) and text->image ranks (N_texts,), int64.
    """
    _check_links(scores_i2t, scores_t2i, img2txt, txt2img)
    pair_img = torch.tensor([i for i, texts in enumerate(img2txt) for _ in texts], dtype=torch.long)
    pair_txt = torch.tensor([t for texts in img2txt for t in texts], dtype=torch.long)
    device = scores_i2t.device
    pair_ranks = ranks_of_targets(scores_i2t, pair_img.to(device), pair_txt.to(device), ties=ties)
    img_ranks = torch.full((len(img2txt),), torch.iinfo(torch.long).max, dtype=torch.long)
    img_ranks = img_ranks.scatter_reduce(0, pair_img, pair_ranks, reduce="amin")
    txt_rows = torch.arange(len(txt2img), device=scores_t2i.device)
    txt_cols = torch.tensor(list(txt2img), dtype=torch.long, device=scores_t2i.device)
    return img_ranks, ranks_of_targets(scores_t2i, txt_rows, txt_cols, ties=ties)


def recall_at_k(ranks: Tensor, k: int) -> float:
    """Percentage of 0-based ``ranks`` below ``k``."""
    return 100.0 * float((ranks < k).double().mean())


def recall_metrics(img_ranks: Tensor, txt_ranks: Tensor) -> dict[str, float]:
    """The official ``itm_eval`` values (:data:`OFFICIAL_KEYS`, percent) from the two rank vectors.

    ``txt_*`` is text retrieval (image queries, ``img_ranks``); ``img_*`` is image retrieval (text queries).
    """
    out: dict[str, float] = {}
    for prefix, ranks in (("txt", img_ranks), ("img", txt_ranks)):
        recalls = [recall_at_k(ranks, k) for k in RECALL_KS]
        out.update({f"{prefix}_r{k}": value for k, value in zip(RECALL_KS, recalls, strict=True)})
        out[f"{prefix}_r_mean"] = (recalls[0] + recalls[1] + recalls[2]) / 3
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return {key: out[key] for key in OFFICIAL_KEYS}


def rank_statistics(img_ranks: Tensor, txt_ranks: Tensor) -> dict[str, float]:
    """Mean and median of the 1-based ranks (:data:`RANK_KEYS`); an even count averages the middle two."""
    out: dict[str, float] = {}
    for prefix, ranks in (("txt", img_ranks), ("img", txt_ranks)):
        one_based = ranks.double() + 1
        out[f"{prefix}_mean_rank"] = float(one_based.mean())
        out[f"{prefix}_median_rank"] = float(one_based.quantile(0.5))
    return out


def retrieval_metrics(
    scores_i2t: ScoreMatrix,
    scores_t2i: ScoreMatrix,
    img2txt: Any,
    txt2img: Any,
    *,
    ties: TieRule = "lower_index_first",
) -> dict[str, float]:
    """The official retrieval metrics (``itm_eval``), plus mean and median ranks.

    Image->text: an image's rank is the best (smallest) rank among all its captions, whatever their number.
    Text->image: the rank of the caption's single image.

    Args:
        scores_i2t: (N_images, N_texts): a tensor, a numpy array (as ``itm_eval`` takes) or nested lists.
        scores_t2i: (N_texts, N_images), likewise.
        img2txt: Caption ids of each image: a list of lists, or the official dict ``{image: [texts]}``.
        txt2img: Image id of each caption: a list, an array, a tensor or the official dict ``{text: image}``.
        ties: The tie rule (module docstring).

    Returns:
        ``txt_r1, txt_r5, txt_r10, txt_r_mean, img_r1, img_r5, img_r10, img_r_mean, r_mean`` (percent, the
        official keys and values), then ``txt_mean_rank, txt_median_rank, img_mean_rank, img_median_rank``.

    Raises:
        ValueError: The matrices do not fit the links, or an id is out of range, or an image has no caption.
    """
    images, texts = as_links(img2txt, txt2img)
    i2t, t2i = as_score_matrix(scores_i2t, "scores_i2t"), as_score_matrix(scores_t2i, "scores_t2i")
    img_ranks, txt_ranks = retrieval_ranks(i2t, t2i, images, texts, ties)
    return {**recall_metrics(img_ranks, txt_ranks), **rank_statistics(img_ranks, txt_ranks)}


def official_subset(metrics: dict[str, float]) -> dict[str, float]:
    """Only the official ``itm_eval`` keys of a metrics dict, in the official order."""
    return {key: metrics[key] for key in OFFICIAL_KEYS}


# -- candidates and score matrices ----------------------------------------------------------------------------
def topk_candidates(sims: Tensor, k: int, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """The ``k`` best columns of every row, best first; equal similarities keep the lower index first.

    ``torch.topk`` finds each row's k best (a partial selection, far cheaper than sorting rows of 25,000), then
    only those k are put in the tie rule's order (value descending, index ascending). A row whose k-th value is
    shared with a column left out could lose a lower-index tie to ``topk``'s arbitrary choice; such rows (rare
    with real similarities) are fully sorted instead, so the result is always that of a stable full sort.

    Args:
        sims: (R, C) ITC similarities.
        k: Candidates per row (clipped to C).
        chunk: Rows handled per step.

    Returns:
        Similarities (R, k) and column indices (R, k) int64.
    """
    k = min(k, sims.shape[1])
    values, indices = [sims.new_empty(0, k)], [torch.empty(0, k, dtype=torch.long, device=sims.device)]
    for start in range(0, sims.shape[0], chunk):
        block = sims[start : start + chunk]
        top, idx = block.topk(k, dim=1)
        idx, _ = idx.sort(dim=1)  # index ascending, then a stable sort by value descending
        top, order = block.gather(1, idx).sort(dim=1, descending=True, stable=True)
        idx = idx.gather(1, order)
        straddling = (block >= top[:, -1:]).sum(dim=1) > k  # a tie at the k-th value crosses the cut
        if bool(straddling.any()):
            rows = straddling.nonzero().squeeze(1)
            full_v, full_i = torch.sort(block[rows], dim=1, descending=True, stable=True)
            top[rows], idx[rows] = full_v[:, :k], full_i[:, :k]
        values.append(top)
        indices.append(idx)
    return torch.cat(values), torch.cat(indices)


def fill_scores(
    shape: tuple[int, int],
    rows: Tensor,
    candidates: Tensor,
    scores: Tensor,
    fill: float = RERANK_FILL,
) -> Tensor:
    """A dense (R, C) score matrix: ``scores`` (n, k) at ``(rows, candidates)``, ``fill`` everywhere else."""
    out = torch.full(shape, fill, dtype=torch.float32)
    out[rows.view(-1, 1), candidates] = scores.float()
    return out


def chance_recall_at_1(split: RetrievalEvalSet) -> dict[str, float]:
    """R@1 (percent) of a random ranking: ``txt_r1`` averages captions-per-image / N_t, ``img_r1`` is 1 / N_i."""
    txt = sum(len(texts) for texts in split.img2txt) / (split.num_images * split.num_texts)
    return {"txt_r1": 100.0 * txt, "img_r1": 100.0 / split.num_images}


def retrieval_metric_objects(
    scores_i2t: Tensor, scores_t2i: Tensor, split: RetrievalEvalSet, ties: TieRule = "lower_index_first"
) -> dict[str, Metric]:
    """The official recalls in percent (higher is better) with their query counts and bootstrap intervals
    (images resampled with their captions), then the mean and median ranks (lower is better)."""
    img_ranks, txt_ranks = retrieval_ranks(scores_i2t, scores_t2i, split.img2txt, split.txt2img, ties)
    values = {**recall_metrics(img_ranks, txt_ranks), **rank_statistics(img_ranks, txt_ranks)}
    intervals = retrieval_intervals(img_ranks, txt_ranks, list(split.txt2img))
    out = {
        key: Metric(values[key], n=intervals[key].n, ci_low=intervals[key].low, ci_high=intervals[key].high)
        for key in OFFICIAL_KEYS
    }
    for key in RANK_KEYS:
        n = img_ranks.shape[0] if key.startswith("txt_") else txt_ranks.shape[0]
        out[key] = Metric(values[key], higher_is_better=False, unit="", n=int(n))
    return out
