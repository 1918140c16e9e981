"""The batched re-ranking equals the official one-query loop bit for bit; candidates, matrices, memory plan."""

from __future__ import annotations

import pytest
import torch

from albef.engine.distributed import World
from albef.evaluation.candidates import select_candidates, shard_rows
from albef.evaluation.memory_plan import FusionDims, plan_memory
from albef.evaluation.metrics import RERANK_FILL, fill_scores, topk_candidates
from albef.evaluation.rerank import (
    PairScorer,
    Reranked,
    dense_scores,
    one_query_rerank,
    rerank_candidates,
    rerank_queries,
)
from albef.reporting.measure import StageTimer
from tests.evaluation import random_features, spread_model

N_IMAGES, N_TEXTS, K = 20, 60, 16
CPU = torch.device("cpu")


def rerank_local(scorer: PairScorer, sims: torch.Tensor, k: int, world: World, timer: StageTimer) -> Reranked:
    """Steps 3 and 4 of the evaluator on this rank: candidates, then their ITM scores."""
    return rerank_candidates(scorer, select_candidates(sims, k, world, timer), sims.shape[1])


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return spread_model()


@pytest.fixture(scope="module")
def features() -> dict[str, torch.Tensor]:
    return random_features(N_IMAGES, N_TEXTS)


def scorer(model: torch.nn.Module, f: dict[str, torch.Tensor], pairs_per_call: int = 512) -> PairScorer:
    return PairScorer(
        model, f["image_embeds"], f["text_states"], f["text_mask"], CPU, pairs_per_call=pairs_per_call
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
@pytest.mark.parametrize("pairs_per_call", [16, 40, 100_000])
def test_batched_rerank_equals_the_one_query_loop_exactly(
    model: torch.nn.Module, features: dict[str, torch.Tensor], direction: str, pairs_per_call: int
) -> None:
    """Many queries per call, K/V once per image, packed tokens, [CLS]-only last layer: the same bits."""
    sims = features["sims"] if direction == "i2t" else features["sims"].T
    _, candidates = topk_candidates(sims, K)
    f = features
    loop = one_query_rerank(model, f["image_embeds"], f["text_states"], f["text_mask"], candidates, direction)  # type: ignore[arg-type]
    s = scorer(model, f, pairs_per_call)
    batched = rerank_queries(s, direction, torch.arange(candidates.shape[0]), candidates)  # type: ignore[arg-type]
    assert torch.equal(batched, loop)
    assert s.calls <= max(1, candidates.numel() // 16)
    if pairs_per_call == 100_000:
        assert s.calls == 1


def test_rerank_local_scores_shared_pairs_once_and_matches_the_loop(
    model: torch.nn.Module, features: dict[str, torch.Tensor]
) -> None:
    f = features
    part = rerank_local(scorer(model, f), f["sims"], K, World(), StageTimer(CPU))
    assert part.pairs_requested == (N_IMAGES + N_TEXTS) * K
    assert part.pairs_scored < part.pairs_requested  # the two directions share pairs
    for direction in ("i2t", "t2i"):
        loop = one_query_rerank(
            model,
            f["image_embeds"],
            f["text_states"],
            f["text_mask"],
            part.candidates[direction],
            direction,  # type: ignore[arg-type]
        )
        assert torch.equal(part.scores[direction], loop)


def test_sharded_ranks_give_the_single_process_matrices(
    model: torch.nn.Module, features: dict[str, torch.Tensor]
) -> None:
    """Three ranks' rows (the official contiguous split), gathered, equal one process's matrices."""
    f, timer = features, StageTimer(CPU)
    single = [rerank_local(scorer(model, f), f["sims"], K, World(), timer)]
    parts = [rerank_local(scorer(model, f), f["sims"], K, World(r, 3), timer) for r in range(3)]
    assert sum(p.rows["i2t"].numel() for p in parts) == N_IMAGES
    for direction, shape in (("i2t", (N_IMAGES, N_TEXTS)), ("t2i", (N_TEXTS, N_IMAGES))):
        assert torch.equal(
            dense_scores(parts, direction, shape, False), dense_scores(single, direction, shape, False)
        )  # type: ignore[arg-type]


def test_a_rank_without_queries_contributes_nothing(
    model: torch.nn.Module, features: dict[str, torch.Tensor]
) -> None:
    f = features
    sims = f["sims"][:3]  # 3 images over 4 ranks: the last rank has no image query
    part = rerank_local(scorer(model, f), sims, K, World(3, 4), StageTimer(CPU))
    assert part.rows["i2t"].numel() == 0 and part.scores["i2t"].shape == (0, K)
    assert part.scores["t2i"].shape == (part.rows["t2i"].numel(), 3)


def test_shard_rows_is_the_official_split() -> None:
    assert [shard_rows(10, World(r, 3)).tolist() for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert shard_rows(2, World(2, 3)).numel() == 0


def test_dense_scores_fill_and_itm_plus_itc(
    model: torch.nn.Module, features: dict[str, torch.Tensor]
) -> None:
    f = features
    part = rerank_local(scorer(model, f), f["sims"], K, World(), StageTimer(CPU))
    itm = dense_scores([part], "i2t", (N_IMAGES, N_TEXTS), False)
    both = dense_scores([part], "i2t", (N_IMAGES, N_TEXTS), True)
    kept = itm != RERANK_FILL
    assert kept.sum(dim=1).tolist() == [K] * N_IMAGES
    rows = torch.arange(N_IMAGES)[:, None]
    assert torch.equal(kept[rows, part.candidates["i2t"]], torch.ones(N_IMAGES, K, dtype=torch.bool))
    assert torch.allclose(
        both[rows, part.candidates["i2t"]] - itm[rows, part.candidates["i2t"]], part.itc["i2t"]
    )
    assert torch.equal(both[~kept], itm[~kept])


def test_topk_candidates_best_first_ties_to_the_lower_index() -> None:
    sims = torch.tensor([[0.5, 0.75, 0.5, 0.25, 0.5]])
    values, indices = topk_candidates(sims, 3)
    assert indices.tolist() == [[1, 0, 2]] and values.tolist() == [[0.75, 0.5, 0.5]]
    assert topk_candidates(sims, 99)[1].shape == (1, 5)


@pytest.mark.parametrize("levels", [3, 50, 0])
def test_topk_candidates_equal_a_stable_full_sort(levels: int) -> None:
    """Partial selection plus the tie rule gives exactly the stable full sort's first k, ties everywhere or none
    (``levels`` distinct values; 0: continuous)."""
    gen = torch.Generator().manual_seed(levels)
    sims = torch.rand(300, 97, generator=gen)
    if levels:
        sims = (sims * levels).floor() / levels
    for k in (1, 10, 96, 97):
        expected_v, expected_i = torch.sort(sims, dim=1, descending=True, stable=True)
        values, indices = topk_candidates(sims, k, chunk=64)
        assert torch.equal(indices, expected_i[:, :k]) and torch.equal(values, expected_v[:, :k])


def test_fill_scores() -> None:
    out = fill_scores(
        (2, 4), torch.tensor([0, 1]), torch.tensor([[3, 1], [0, 2]]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    )
    assert out.tolist() == [[-100.0, 2.0, -100.0, 1.0], [3.0, -100.0, 4.0, -100.0]]


def test_scorer_rejects_masks_that_are_not_prefixes(
    model: torch.nn.Module, features: dict[str, torch.Tensor]
) -> None:
    f = dict(features)
    mask = f["text_mask"].clone()
    mask[0, 1] = 0  # a hole after the [CLS]
    with pytest.raises(ValueError, match="prefixes"):
        PairScorer(model, f["image_embeds"], f["text_states"], mask, CPU)  # type: ignore[arg-type]


# -- the memory plan --------------------------------------------------------------------------------------------
def test_memory_plan_of_coco_5k_at_384_px() -> None:
    """The numbers documented in albef/evaluation/memory_plan.py (ViT-B/16 + BERT-base)."""
    plan = plan_memory(FusionDims(768, 768, 12, 3072), 5000, 25010, 577, 256, budget_mb=2048)
    assert plan.image_tokens == 5000 * 577 * 768 * 4  # 8.25 GiB
    assert plan_memory(
        FusionDims(768, 768, 12, 3072), 5000, 25010, 577, 256, feature_dtype="bf16"
    ).image_tokens == (plan.image_tokens // 2)
    assert plan.text_states == 25010 * 30 * 768 * 4
    assert plan.itc_matrix == 5000 * 25010 * 4 and plan.score_matrices == 2 * plan.itc_matrix
    assert plan.candidates == (5000 + 25010) * 256 * 8
    assert plan.pair_bytes == 577 * 768 * 4 * 3 + 30 * (6 * 768 + 3072) * 4 + 12 * 30 * 577 * 4
    assert plan.pairs_per_call == 2048 * 2**20 // plan.pair_bytes == 303
    assert plan.call_bytes <= 2048 * 2**20


def test_memory_plan_at_small_scale_bounds_the_calls(
    model: torch.nn.Module, features: dict[str, torch.Tensor]
) -> None:
    """A budget of a few pairs cuts the same work into more calls with the same scores; stored sizes add up."""
    f = features
    dims = FusionDims.of(model)  # type: ignore[arg-type]
    plan = plan_memory(dims, N_IMAGES, N_TEXTS, 10, K)
    assert plan.image_tokens == f["image_embeds"].nbytes and plan.text_states == f["text_states"].nbytes
    small = plan_memory(dims, N_IMAGES, N_TEXTS, 10, K, budget_mb=40 * plan.pair_bytes / 2**20)
    assert small.pairs_per_call == 40 and small.call_bytes <= 40 * plan.pair_bytes
    _, candidates = topk_candidates(f["sims"], K)
    big, little = scorer(model, f, plan.pairs_per_call), scorer(model, f, small.pairs_per_call)
    rows = torch.arange(N_IMAGES)
    assert torch.equal(
        rerank_queries(big, "i2t", rows, candidates), rerank_queries(little, "i2t", rows, candidates)
    )
    assert little.calls >= N_IMAGES * K / 40 and big.calls == 1
