"""Retrieval step 3 of 5, candidates: each query's top k by the ITC similarity, for this rank's queries.

Under ``torchrun`` the image queries and the text queries are cut into contiguous blocks, one per rank (the
official split, :func:`shard_rows`); each rank re-ranks its own and the rows are gathered afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from albef.engine.distributed import World
from albef.evaluation.metrics import topk_candidates
from albef.reporting.measure import StageTimer


def shard_rows(total: int, world: World) -> Tensor:
    """This rank's query rows: contiguous blocks of ``total // world_size + 1`` rows (the official split)."""
    step = total // world.world_size + 1
    start = min(total, world.rank * step)
    return torch.arange(start, min(total, start + step))


@dataclass
class Candidates:
    """This rank's queries per direction (``i2t``: image rows of the similarity, ``t2i``: text rows).

    Attributes:
        rows: The query rows (n,).
        candidates: Their top-k candidate indices (n, k), best first, ties to the lower index.
        itc: The ITC similarities of those candidates (n, k).
    """

    rows: dict[str, Tensor]
    candidates: dict[str, Tensor]
    itc: dict[str, Tensor]


def select_candidates(sims: Tensor, k: int, world: World, timer: StageTimer) -> Candidates:
    """The top ``k`` candidates of this rank's image queries (rows of ``sims``) and text queries (columns),
    sorted where ``sims`` is (the device) and returned in host memory, where the re-rank plans its calls."""
    rows, candidates, itc = {}, {}, {}
    for direction, matrix in (("i2t", sims), ("t2i", sims.T)):
        rows[direction] = shard_rows(matrix.shape[0], world)
        with timer.stage("topk", items=max(1, rows[direction].shape[0]), item="query"):
            values, indices = topk_candidates(matrix[rows[direction].to(sims.device)], k)
        itc[direction], candidates[direction] = values.cpu(), indices.cpu()
    return Candidates(rows, candidates, itc)
