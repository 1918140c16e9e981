"""The retrieval evaluation and finetuning objective of ``retrieval.pt``, recomputed by the production code.

The evaluation rows run the evaluator's own pieces on the fixture's inputs: texts padded to ``max_length``,
images encoded in batches of ``loader_batch_size``, the ITC similarity, the top-k candidates, the batched ITM
re-ranking (:class:`~albef.evaluation.rerank.PairScorer`) and the dense -100-filled matrices
(:func:`~albef.evaluation.rerank.dense_scores`). ``itm_eval`` is recomputed by
:func:`~albef.evaluation.metrics.retrieval_metrics` from *our* matrices under the tie rule of each entry: the
official numpy sort put the higher index first on the generating machine (``itm_eval``), our default puts the
lower index first; with ``k_test = 3`` the -100 ties decide ``txt_r5`` (100 vs 75), which
``itm_eval_tie_sensitive`` records.

The objective rows run :class:`~albef.tasks.retrieval.RetrievalObjective` (the finetuning task's, in parity
mode) after ``manual_seed(forward_seed)`` on a copy of the model; the losses must equal the official ones.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import Tensor

from albef.data.collate import RetrievalBatch
from albef.data.tokenizer import TokenBatch
from albef.engine.distributed import World
from albef.evaluation.candidates import select_candidates
from albef.evaluation.metrics import TieRule, official_subset, retrieval_metrics
from albef.evaluation.rerank import PairScorer, Reranked, dense_scores, one_query_rerank, rerank_candidates
from albef.losses.itm import sample_negatives_in_order
from albef.models.albef import ALBEFRetrieval
from albef.reporting.measure import StageTimer
from albef.tasks.retrieval import RetrievalObjective
from albef.verification.compare import CheckRow, compare
from albef.verification.losses import comparison_row, seeded
from albef.verification.outputs import pad_token_lists
from albef.verification.reference import FixtureContext, output_check, rows_check


def _model(ctx: FixtureContext) -> ALBEFRetrieval:
    """The fixture's retrieval model, in eval mode."""
    return cast(ALBEFRetrieval, ctx.model).eval()


def _features(ctx: FixtureContext) -> dict[str, Tensor]:
    """Image tokens and features (batches of ``loader_batch_size``), text states, masks and features."""

    def compute() -> dict[str, Tensor]:
        model, inputs = _model(ctx), ctx.fixture.inputs
        pad = int(ctx.fixture.config["special_token_ids"]["pad"])
        ids, mask = pad_token_lists(inputs["texts"], int(inputs["max_length"]), pad)
        text = model.encode_text(ids, mask)
        batches = inputs["image"].split(int(inputs["loader_batch_size"]))
        images = [model.encode_image(batch) for batch in batches]
        return {
            "image_embeds": torch.cat([enc.embeds for enc in images]),
            "image_feat": torch.cat([enc.feat for enc in images]),
            "text_states": text.states,
            "text_mask": mask,
            "text_feat": text.feat,
        }

    return ctx.memo("retrieval.features", compute)


def _reranked(ctx: FixtureContext) -> Reranked:
    """The evaluator's re-ranking of every image and text query (one process, ``k_test`` candidates)."""

    def compute() -> Reranked:
        f = _features(ctx)
        scorer = PairScorer(
            _model(ctx), f["image_embeds"], f["text_states"], f["text_mask"], torch.device("cpu")
        )
        sims = f["image_feat"] @ f["text_feat"].T
        chosen = select_candidates(sims, int(ctx.fixture.inputs["k_test"]), World(), StageTimer(sims.device))
        return rerank_candidates(scorer, chosen, sims.shape[1])

    return ctx.memo("retrieval.reranked", compute)


def _scores(ctx: FixtureContext) -> tuple[Tensor, Tensor]:
    """Our dense score matrices (N_i, N_t) and (N_t, N_i), -100 outside each query's top k."""
    f, parts = _features(ctx), [_reranked(ctx)]
    n_img, n_txt = f["image_feat"].shape[0], f["text_feat"].shape[0]
    return dense_scores(parts, "i2t", (n_img, n_txt), False), dense_scores(
        parts, "t2i", (n_txt, n_img), False
    )


@output_check("retrieval", "score_matrix_i2t")
def _score_matrix_i2t(ctx: FixtureContext) -> Tensor:
    """Image->text: ITM match logit of each image's top-k texts by ITC, -100 elsewhere (N_i, N_t)."""
    return _scores(ctx)[0]


@output_check("retrieval", "score_matrix_t2i")
def _score_matrix_t2i(ctx: FixtureContext) -> Tensor:
    """Text->image: ITM match logit of each text's top-k images by ITC, -100 elsewhere (N_t, N_i)."""
    return _scores(ctx)[1]


def _itm_eval(ctx: FixtureContext, ties: TieRule) -> dict[str, float]:
    """The official ``itm_eval`` values of our matrices under a tie rule."""
    inputs = ctx.fixture.inputs
    scores_i2t, scores_t2i = _scores(ctx)
    return official_subset(
        retrieval_metrics(scores_i2t, scores_t2i, inputs["img2txt"], inputs["txt2img"], ties=ties)
    )


@output_check("retrieval", "itm_eval")
def _itm_eval_official(ctx: FixtureContext) -> dict[str, float]:
    """``retrieval_metrics(ties="higher_index_first")``: the order numpy gave the fixture's machine."""
    return _itm_eval(ctx, "higher_index_first")


@output_check("retrieval", "itm_eval_ties_higher_index_first")
def _itm_eval_higher(ctx: FixtureContext) -> dict[str, float]:
    """``retrieval_metrics(ties="higher_index_first")``."""
    return _itm_eval(ctx, "higher_index_first")


@output_check("retrieval", "itm_eval_ties_lower_index_first")
def _itm_eval_lower(ctx: FixtureContext) -> dict[str, float]:
    """``retrieval_metrics()`` with our default tie rule (lower index first)."""
    return _itm_eval(ctx, "lower_index_first")


@output_check("retrieval", "itm_eval_tie_sensitive")
def _tie_sensitive(ctx: FixtureContext) -> bool:
    """Whether the two tie rules give different ``itm_eval`` values on our matrices."""
    return _itm_eval(ctx, "higher_index_first") != _itm_eval(ctx, "lower_index_first")


@rows_check("retrieval", "rerank_one_query")
def _one_query(ctx: FixtureContext) -> list[CheckRow]:
    """The batched re-ranking against the official one-query-at-a-time loop on the same features and model."""
    f, part = _features(ctx), _reranked(ctx)
    rows = []
    for direction in ("i2t", "t2i"):
        loop = one_query_rerank(
            _model(ctx),
            f["image_embeds"],
            f["text_states"],
            f["text_mask"],
            part.candidates[direction],
            direction,
        )
        result = compare(part.scores[direction], loop)
        exact = "bit-identical" if torch.equal(part.scores[direction], loop) else "within tolerance"
        rows.append(comparison_row(ctx, f"rerank.{direction}.batched_vs_one_query", result, exact))
    return rows


@rows_check("retrieval", "objective")
def _objective(ctx: FixtureContext) -> list[CheckRow]:
    """The finetuning task's objective (parity draws after ``manual_seed(forward_seed)``) against the losses."""
    inputs, outputs = ctx.fixture.inputs, ctx.fixture.outputs
    model = copy.deepcopy(_model(ctx))
    batch = RetrievalBatch(
        inputs["train_image"],
        TokenBatch(inputs["train_input_ids"], inputs["train_attention_mask"]),
        inputs["train_idx"],
    )
    objective = RetrievalObjective(sample=sample_negatives_in_order)  # distillation: the fixture's model
    seed = int(inputs["forward_seed"])
    with seeded(seed):
        losses = objective(model, batch, float(inputs["alpha"]))
    detail = f"RetrievalObjective(sample=sample_negatives_in_order) after manual_seed({seed})"
    return [
        comparison_row(
            ctx, "train_loss_ita.objective", compare(losses["itc_loss"], outputs["train_loss_ita"]), detail
        ),
        comparison_row(
            ctx, "train_loss_itm.objective", compare(losses["itm_loss"], outputs["train_loss_itm"]), detail
        ),
    ]
