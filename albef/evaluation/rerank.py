"""Retrieval step 4 of 5, re-rank: every query's k candidates scored by the ITM head, -100 elsewhere.

:func:`rerank_candidates` scores this rank's candidates of both directions through a
:class:`~albef.evaluation.pair_scorer.PairScorer` (many queries per fusion call, shared work done once; a pair
asked by both directions is scored once), and :func:`dense_scores` lays every rank's rows out as the official
score matrices. :func:`one_query_rerank` is the official loop, one fusion call per query on its k candidates:
the baseline of ``benchmarks/bench_rerank.py`` and of the tests, which require the scorer to equal it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from albef.evaluation.candidates import Candidates
from albef.evaluation.metrics import RERANK_FILL, fill_scores
from albef.evaluation.pair_scorer import PairScorer
from albef.evaluation.partial import PartialScores
from albef.models.albef import ContrastiveALBEF, TextEncoding

Direction = Literal["i2t", "t2i"]
ScoreMode = Literal["itm", "itm+itc"]

__all__ = [
    "Direction",
    "PairScorer",
    "Reranked",
    "ScoreMode",
    "dense_scores",
    "one_query_rerank",
    "rerank_candidates",
]


# -- pairs and the official loop --------------------------------------------------------------------------
def query_pairs(direction: Direction, rows: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """(image, text) index pairs of query ``rows`` (n,) and their candidates (n, k), row-major."""
    k = candidates.shape[1]
    queries = rows.repeat_interleave(k)
    flat = candidates.reshape(-1)
    return (queries, flat) if direction == "i2t" else (flat, queries)


@torch.inference_mode()
def one_query_rerank(
    model: ContrastiveALBEF,
    image_embeds: Tensor,
    text_states: Tensor,
    text_mask: Tensor,
    candidates: Tensor,
    direction: Direction,
) -> Tensor:
    """The official re-rank loop: one fusion call per query on its k candidates (the baseline).

    Args:
        model: The model (eval mode).
        image_embeds: Image tokens (N_i, S, Dv).
        text_states: Text-mode states (N_t, L, H).
        text_mask: (N_t, L).
        candidates: (n, k) candidate indices of query rows ``0 .. n-1``.
        direction: ``i2t`` (rows are images, candidates texts) or ``t2i``.

    Returns:
        ITM match logits (n, k).
    """
    out = []
    for query, cand in enumerate(candidates):
        k = cand.shape[0]
        if direction == "i2t":
            text = TextEncoding(text_states[cand], text_mask[cand], text_states.new_zeros(0))
            images = image_embeds[query].expand(k, -1, -1)
        else:
            text = TextEncoding(
                text_states[query].expand(k, -1, -1), text_mask[query].expand(k, -1), text_states.new_zeros(0)
            )
            images = image_embeds[cand]
        out.append(model.itm_logits(model.fuse(text, images))[:, 1])
    return torch.stack(out)


@dataclass
class Reranked:
    """The ITM scores of this rank's queries: ``scores[d]`` (n, k) for the rows ``rows[d]`` (n,)."""

    rows: dict[str, Tensor]
    candidates: dict[str, Tensor]
    itc: dict[str, Tensor]
    scores: dict[str, Tensor]
    pairs_requested: int
    pairs_scored: int


def rerank_candidates(
    scorer: PairScorer, chosen: Candidates, n_text: int, partial: PartialScores | None = None
) -> Reranked:
    """ITM scores of this rank's candidates, both directions; a pair asked by both is scored once. With
    ``partial`` the pairs are scored in blocks, the results saved after each (and taken up again on resume)."""
    rows, candidates, itc = chosen.rows, chosen.candidates, chosen.itc
    images = [rows["i2t"].repeat_interleave(candidates["i2t"].shape[1]), candidates["t2i"].reshape(-1)]
    texts = [candidates["i2t"].reshape(-1), rows["t2i"].repeat_interleave(candidates["t2i"].shape[1])]
    pair_ids = torch.cat(images) * n_text + torch.cat(texts)
    unique, inverse = torch.unique(pair_ids, return_inverse=True)
    if partial is None:
        unique_scores = scorer.score(unique // n_text, unique % n_text)
    else:
        unique_scores = torch.empty(unique.shape[0], dtype=torch.float32)
        done = partial.load(unique)
        unique_scores[: done.shape[0]] = done
        for start in range(done.shape[0], unique.shape[0], partial.every):
            block = unique[start : start + partial.every]
            unique_scores[start : start + block.shape[0]] = scorer.score(block // n_text, block % n_text)
            partial.save(unique, unique_scores[: start + block.shape[0]])
    scored = unique_scores[inverse]
    split = candidates["i2t"].numel()
    scores = {
        "i2t": scored[:split].view(candidates["i2t"].shape),
        "t2i": scored[split:].view(candidates["t2i"].shape),
    }
    return Reranked(rows, candidates, itc, scores, pair_ids.numel(), unique.numel())


def dense_scores(
    parts: list[Reranked], direction: Direction, shape: tuple[int, int], add_itc: bool
) -> Tensor:
    """The full (R, C) matrix of one direction from every rank's rows (-100 outside each top k)."""
    out = torch.full(shape, RERANK_FILL, dtype=torch.float32)
    for part in parts:
        scores = part.scores[direction] + (part.itc[direction] if add_itc else 0.0)
        rows, candidates = part.rows[direction], part.candidates[direction]
        out[rows] = fill_scores((rows.shape[0], shape[1]), torch.arange(rows.shape[0]), candidates, scores)
    return out


def rerank_queries(scorer: PairScorer, direction: Direction, rows: Tensor, candidates: Tensor) -> Tensor:
    """Match logits (n, k) of query ``rows`` (n,) against their ``candidates`` (n, k) through ``scorer``."""
    image_idx, text_idx = query_pairs(direction, rows, candidates)
    return scorer.score(image_idx, text_idx).view(candidates.shape)
