"""The VQA training loss of ``vqa.pt``, recomputed by the production objective (eval mode, float32).

The official call is ``model(train_image, q, a, train=True, alpha=0.4, k=train_k, weights=...)``: one EMA
step of the teachers, question states repeated per answer, token losses summed per answer and mixed with the
momentum decoder's soft targets, weighted and divided by the number of questions. The EMA step changes the
model, so it runs on a deep copy of the fixture model.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import Tensor

from albef.data.collate import VQABatch
from albef.data.tokenizer import TokenBatch
from albef.models.vqa import ALBEFVQA
from albef.tasks.vqa import VQAObjective
from albef.verification.compare import CheckRow, Status, compare
from albef.verification.reference import FixtureContext, output_check, rows_check


def training_batch(ctx: FixtureContext) -> VQABatch:
    """The fixture's training inputs as our :class:`VQABatch`."""
    inputs = ctx.fixture.inputs
    k = [int(n) for n in inputs["train_k"]]
    return VQABatch(
        image=inputs["train_image"],
        question=TokenBatch(inputs["train_question_input_ids"], inputs["train_question_attention_mask"]),
        answer=TokenBatch(inputs["train_answer_input_ids"], inputs["train_answer_attention_mask"]),
        weights=inputs["train_weights"],
        k=k,
        question_id=torch.full((len(k),), -1, dtype=torch.long),
    )


@output_check("vqa", "train_loss")
def _vqa_train_loss(ctx: FixtureContext) -> Tensor:
    """``VQAObjective`` (EMA step, distillation with the fixture's alpha) on the fixture's training batch."""
    config = ctx.fixture.config
    model = cast(ALBEFVQA, copy.deepcopy(ctx.model))
    objective = VQAObjective(int(config["special_token_ids"]["pad"]))
    alpha = float(ctx.fixture.inputs["alpha"])
    return objective(model, training_batch(ctx), alpha)["vqa_loss"]


EMA_SENSITIVE_ATOL = 5e-5
"""Absolute tolerance of the ``train_loss.ema_step`` row: 10x the float32 error seen on this loss (~4e-6),
and several times below what skipping the EMA step changes (~3e-4), which the README tolerance would miss."""


@rows_check("vqa", "train_loss.ema_step")
def _vqa_train_loss_ema(ctx: FixtureContext) -> list[CheckRow]:
    """The training loss at a tolerance that tells the teachers' EMA step (done first) from none."""
    config, inputs = ctx.fixture.config, ctx.fixture.inputs
    objective = VQAObjective(int(config["special_token_ids"]["pad"]))
    reference = ctx.fixture.outputs["train_loss"]
    losses = {}
    for ema in (True, False):
        model = cast(ALBEFVQA, copy.deepcopy(ctx.model))
        if not ema:
            model.momentum = 1.0  # an EMA step that leaves the teachers as they are
        losses[ema] = objective(model, training_batch(ctx), float(inputs["alpha"]))["vqa_loss"]
    result = compare(losses[True], reference, atol=EMA_SENSITIVE_ATOL, rtol=0.0)
    without = float((losses[False] - reference).abs())
    status: Status = "pass" if result.passed and without > EMA_SENSITIVE_ATOL else "fail"
    detail = (
        result.detail or f"atol {EMA_SENSITIVE_ATOL:g}; without the EMA step the loss is off by {without:.2e}"
    )
    return [ctx.row("train_loss.ema_step", result.max_abs_diff, status, detail)]
