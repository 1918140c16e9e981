"""The training losses of the reference fixtures, recomputed by the production code (eval mode, float32).

The official losses depend on random draws (hard negatives, MLM masks), so each fixture is checked twice:

* **traced**: the draws recorded in ``rng_trace`` / ``train_rng_trace`` are fed in, which checks the loss
  arithmetic on its own (rows ``loss_ita`` ... ``train_loss_itm``);
* **seeded**: after ``torch.manual_seed(forward_seed)`` our code draws them itself in parity mode (row by row
  on the default generator, in the official order). The draws must equal the trace exactly (rows
  ``rng_trace``, ``train_rng_trace``) and the losses the official ones (rows ``*.seeded``).

Every call that changes the model (temperature clamp, EMA step, enqueue) runs on a deep copy of the fixture
model; the copy left by the seeded forward is compared with ``after_forward`` / ``train_after_forward``.
Seeded steps run inside :func:`torch.random.fork_rng`, so the caller's random state is left as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from albef.checkpoint.layout import ours_key
from albef.data.collate import ImageTextBatch
from albef.data.tokenizer import TextTokenizer, TokenBatch
from albef.losses import mask_tokens
from albef.losses.itm import NegativeSamples, sample_negatives_in_order
from albef.models.albef import ALBEFPretrain, ALBEFRetrieval, ContrastiveALBEF
from albef.tasks.contrastive import (
    ContrastiveStep,
    DrawNegatives,
    contrastive_step,
    draw_negatives,
)
from albef.tasks.pretrain import TEMP_RANGE, PretrainObjective
from albef.verification.compare import CheckRow, Comparison, compare
from albef.verification.reference import FixtureContext, output_check, rows_check

OFFICIAL_RETRIEVAL_OFFSET = 1e-4
"""The constant the official retrieval forward adds to the similarities before its softmax (a no-op)."""


def recorded(trace: Mapping[str, Tensor]) -> DrawNegatives:
    """Negatives taken from a fixture's RNG trace, whatever the similarities."""
    negatives = NegativeSamples(trace["neg_image_idx_per_text"], trace["neg_text_idx_per_image"])
    return lambda _: negatives


def in_order_draw(idx: Tensor | None = None) -> DrawNegatives:
    """Our sampler drawing in the official order (row by row on the default generator), same-image entries
    excluded."""
    return lambda itc: draw_negatives(itc.sim_i2t, itc.sim_t2i, idx, sample=sample_negatives_in_order)


def trace_of(negatives: NegativeSamples) -> dict[str, Tensor]:
    """Negatives under the names of the fixture's RNG trace."""
    return {
        "neg_image_idx_per_text": negatives.image_for_text,
        "neg_text_idx_per_image": negatives.text_for_image,
    }


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body after ``torch.manual_seed(seed)`` and restore the caller's CPU random state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def state_after(model: ContrastiveALBEF, reference: Mapping[str, Any]) -> dict[str, Tensor]:
    """Our tensors under the official names of ``reference`` (``image_queue`` is our ``queue.image_queue``)."""
    ours = model.state_dict()
    return {key: ours[ours_key(key) or key] for key in reference}


def _distill(ctx: FixtureContext) -> bool:
    """Whether the fixture's model distils from its momentum teacher (``config['distill']``)."""
    return bool(ctx.fixture.config["distill"])


def comparison_row(ctx: FixtureContext, output: str, result: Comparison, detail: str) -> CheckRow:
    """A row for one comparison: its problem when it failed, else ``detail`` (how the value was computed)."""
    return ctx.row(output, result.max_abs_diff, "pass" if result.passed else "fail", result.detail or detail)


def _loss_rows(ctx: FixtureContext, mine: Mapping[str, Tensor], suffix: str, detail: str) -> list[CheckRow]:
    """One row per loss: ``<name><suffix>`` compared with ``outputs[name]``."""
    return [
        comparison_row(ctx, name + suffix, compare(value, ctx.fixture.outputs[name]), detail)
        for name, value in mine.items()
    ]


# -- pretrain.pt -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FixtureVocabulary:
    """The special ids and vocabulary size of a fixture: all the pretraining objective asks of a tokenizer."""

    pad_token_id: int
    cls_token_id: int
    mask_token_id: int
    vocab_size: int


def _objective(ctx: FixtureContext) -> PretrainObjective:
    """Our pretraining objective with the fixture's settings, drawing in parity mode."""
    config = ctx.fixture.config
    ids = config["special_token_ids"]
    vocab = FixtureVocabulary(
        int(ids["pad"]), int(ids["cls"]), int(ids["mask"]), int(config["bert_config"]["vocab_size"])
    )
    # The objective only reads the four attributes above; a real tokenizer for a 1000-id vocabulary with the
    # bert-base special ids would add nothing to the check.
    return PretrainObjective(
        cast(TextTokenizer, vocab), float(config["mlm_probability"]), sample=sample_negatives_in_order
    )


def _pretrain_copy(ctx: FixtureContext) -> ALBEFPretrain:
    """A deep copy of the fixture's pretraining model, temperature clamped as the forward does first."""
    model = cast(ALBEFPretrain, copy.deepcopy(ctx.model))
    model.temp.clamp_(*TEMP_RANGE)
    return model


def _pretrain_text(ctx: FixtureContext) -> TokenBatch:
    """The fixture's (unmasked) texts."""
    inputs = ctx.fixture.inputs
    return TokenBatch(inputs["input_ids"], inputs["attention_mask"])


def _pretrain_traced(ctx: FixtureContext) -> dict[str, Tensor]:
    """The three losses with the recorded negatives and MLM masks fed in."""

    def compute() -> dict[str, Tensor]:
        inputs, trace = ctx.fixture.inputs, ctx.fixture.outputs["rng_trace"]
        alpha, model = float(inputs["alpha"]), _pretrain_copy(ctx)
        text, distill = _pretrain_text(ctx), _distill(ctx)
        step = contrastive_step(model, inputs["image"], text, alpha, recorded(trace), distill=distill)
        mlm = _objective(ctx).mlm(
            model,
            trace["mlm_masked_input_ids"],
            trace["mlm_labels"],
            inputs["attention_mask"],
            step.image.embeds,
            step.image_m.embeds,
            alpha,
        )
        return {"loss_ita": step.itc.loss, "loss_itm": step.itm_loss, "loss_mlm": mlm}

    return ctx.memo("losses.pretrain_traced", compute)


@output_check("pretrain", "loss_ita")
def _loss_ita(ctx: FixtureContext) -> Tensor:
    """ITC over [momentum batch | queue] with distillation (independent of the random draws)."""
    return _pretrain_traced(ctx)["loss_ita"]


@output_check("pretrain", "loss_itm")
def _loss_itm(ctx: FixtureContext) -> Tensor:
    """ITM on B positives and 2B negatives taken from ``rng_trace``."""
    return _pretrain_traced(ctx)["loss_itm"]


@output_check("pretrain", "loss_mlm")
def _loss_mlm(ctx: FixtureContext) -> Tensor:
    """MLM with teacher soft labels on the masks of ``rng_trace``."""
    return _pretrain_traced(ctx)["loss_mlm"]


@output_check("pretrain", "rng_trace")
def _rng_trace(ctx: FixtureContext) -> dict[str, Tensor]:
    """Negatives and MLM masks drawn by our code after ``manual_seed(forward_seed)``; compared exactly."""
    inputs, objective, model = ctx.fixture.inputs, _objective(ctx), _pretrain_copy(ctx)
    text, alpha = _pretrain_text(ctx), float(inputs["alpha"])
    with seeded(int(inputs["forward_seed"])):
        step = contrastive_step(model, inputs["image"], text, alpha, in_order_draw(), distill=_distill(ctx))
        masked, labels = mask_tokens(
            text.input_ids,
            objective.vocab_size,
            objective.mask_id,
            objective.pad_id,
            objective.cls_id,
            objective.mlm_probability,
        )
    return {**trace_of(step.negatives), "mlm_masked_input_ids": masked, "mlm_labels": labels}


def _pretrain_seeded(ctx: FixtureContext) -> tuple[dict[str, Tensor], ALBEFPretrain]:
    """``PretrainObjective(sample=sample_negatives_in_order)`` after ``manual_seed(forward_seed)``: its losses and the model after."""

    def compute() -> tuple[dict[str, Tensor], ALBEFPretrain]:
        inputs = ctx.fixture.inputs
        model = cast(ALBEFPretrain, copy.deepcopy(ctx.model))
        batch = ImageTextBatch(inputs["image"], _pretrain_text(ctx))
        with seeded(int(inputs["forward_seed"])):
            out = _objective(ctx)(model, batch, float(inputs["alpha"]))
        losses = {"loss_ita": out["itc_loss"], "loss_itm": out["itm_loss"], "loss_mlm": out["mlm_loss"]}
        return losses, model

    return ctx.memo("losses.pretrain_seeded", compute)


@rows_check("pretrain", "seeded_forward", covers=("rng_trace",))
def _seeded_forward(ctx: FixtureContext) -> list[CheckRow]:
    """The production pretraining objective, drawing its own negatives and masks, against the official losses."""
    seed = int(ctx.fixture.inputs["forward_seed"])
    detail = f"PretrainObjective(sample=sample_negatives_in_order) after manual_seed({seed})"
    return _loss_rows(ctx, _pretrain_seeded(ctx)[0], ".seeded", detail)


@output_check("pretrain", "after_forward")
def _after_forward(ctx: FixtureContext) -> dict[str, Tensor]:
    """Queues, pointer, clamped temperature and one EMA step, after the seeded pretraining forward."""
    model = _pretrain_seeded(ctx)[1]
    return state_after(model, ctx.fixture.outputs["after_forward"])


# -- retrieval.pt ------------------------------------------------------------------------------------------
def _retrieval_step(
    ctx: FixtureContext, key: str, draw: DrawNegatives
) -> tuple[ContrastiveStep, ALBEFRetrieval]:
    """The official retrieval training forward after ``manual_seed(forward_seed)``, on a model copy.

    Image ids are the ITC positives and are excluded from the negatives; the temperature is not clamped.
    """

    def compute() -> tuple[ContrastiveStep, ALBEFRetrieval]:
        inputs = ctx.fixture.inputs
        model = cast(ALBEFRetrieval, copy.deepcopy(ctx.model))
        text = TokenBatch(inputs["train_input_ids"], inputs["train_attention_mask"])
        alpha, distill = float(inputs["alpha"]), _distill(ctx)
        with seeded(int(inputs["forward_seed"])):
            step = contrastive_step(
                model, inputs["train_image"], text, alpha, draw, inputs["train_idx"], distill
            )
        return step, model

    return ctx.memo(key, compute)


def _retrieval_traced(ctx: FixtureContext) -> ContrastiveStep:
    """The retrieval losses with the recorded negatives fed in."""
    draw = recorded(ctx.fixture.outputs["train_rng_trace"])
    return _retrieval_step(ctx, "losses.retrieval_traced", draw)[0]


def _retrieval_seeded(ctx: FixtureContext) -> tuple[ContrastiveStep, ALBEFRetrieval]:
    """The retrieval forward drawing its own negatives after ``manual_seed(forward_seed)``."""
    draw = in_order_draw(ctx.fixture.inputs["train_idx"])
    return _retrieval_step(ctx, "losses.retrieval_seeded", draw)


@output_check("retrieval", "train_loss_ita")
def _train_loss_ita(ctx: FixtureContext) -> Tensor:
    """ITC with same-id positives over batch + ``idx_queue``, distilled (alpha from the fixture)."""
    return _retrieval_traced(ctx).itc.loss


@output_check("retrieval", "train_loss_itm")
def _train_loss_itm(ctx: FixtureContext) -> Tensor:
    """ITM on the negatives of ``train_rng_trace``."""
    return _retrieval_traced(ctx).itm_loss


def official_retrieval_negatives(sim_i2t: Tensor, sim_t2i: Tensor, idx: Tensor) -> NegativeSamples:
    """The official retrieval sampler as the fixture README describes it, written out independently of ours.

    Weights ``softmax(sim[:, :B] + 1e-4)`` with every same-id entry zeroed, then one ``multinomial(row, 1)``
    per text (a negative image), then one per image (a negative text), on the default generator.
    """
    batch = idx.shape[0]
    same = idx.view(-1, 1) == idx.view(1, -1)
    w_t2i = F.softmax(sim_t2i[:, :batch] + OFFICIAL_RETRIEVAL_OFFSET, dim=1).masked_fill(same, 0)
    w_i2t = F.softmax(sim_i2t[:, :batch] + OFFICIAL_RETRIEVAL_OFFSET, dim=1).masked_fill(same, 0)
    images = [int(torch.multinomial(row, 1)) for row in w_t2i]
    texts = [int(torch.multinomial(row, 1)) for row in w_i2t]
    return NegativeSamples(torch.tensor(images), torch.tensor(texts))


@rows_check("retrieval", "train_rng_trace", covers=("train_rng_trace",))
def _train_rng_trace(ctx: FixtureContext) -> list[CheckRow]:
    """Negatives drawn after ``manual_seed(forward_seed)`` by our sampler and by the README's, and the losses."""
    inputs, reference = ctx.fixture.inputs, ctx.fixture.outputs["train_rng_trace"]
    seed, step = int(inputs["forward_seed"]), _retrieval_seeded(ctx)[0]
    ours = compare(trace_of(step.negatives), reference)
    with seeded(seed):
        official = official_retrieval_negatives(step.itc.sim_i2t, step.itc.sim_t2i, inputs["train_idx"])
    readme = compare(trace_of(official), reference)
    rows = [
        comparison_row(
            ctx,
            "train_rng_trace",
            ours,
            f"draw_negatives(idx, sample=sample_negatives_in_order) after manual_seed({seed})",
        ),
        comparison_row(
            ctx,
            "train_rng_trace.readme_sampler",
            readme,
            "softmax(sim + 1e-4), same-id entries zeroed, one multinomial per row",
        ),
    ]
    losses = {"train_loss_ita": step.itc.loss, "train_loss_itm": step.itm_loss}
    return rows + _loss_rows(ctx, losses, ".seeded", f"own draws after manual_seed({seed})")


@output_check("retrieval", "train_after_forward")
def _train_after_forward(ctx: FixtureContext) -> dict[str, Tensor]:
    """Queues, ``idx_queue`` and pointer after the seeded retrieval forward."""
    model = _retrieval_seeded(ctx)[1]
    return state_after(model, ctx.fixture.outputs["train_after_forward"])
