"""The forward outputs of the reference fixtures, recomputed with our models (eval mode, float32).

Each function recomputes one ``outputs`` entry of a fixture file from its ``inputs``, exactly as the
reference README describes the official call; the registry compares the result. Losses, RNG traces, the
state after a training forward and the retrieval evaluation (score matrices, ``itm_eval``) are not here:
they are reported as skipped until their checks are registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor

from albef.models.albef import ALBEFPretrain, ALBEFRetrieval, ContrastiveALBEF, ImageEncoding, TextEncoding
from albef.models.classify import ALBEFNLVR, ALBEFVE
from albef.models.vqa import ALBEFVQA, RankedAnswers
from albef.verification.compare import CheckRow
from albef.verification.fixtures import FIXTURE_TASKS
from albef.verification.reference import FixtureContext, output_check, rows_check


# -- every fixture: the strict load ------------------------------------------------------------------------
def _strict_load(ctx: FixtureContext) -> list[CheckRow]:
    """The fixture's state dict, renamed to our layout, loads with ``strict=True``."""
    count = len(ctx.model.state_dict())
    return [ctx.row("state_dict", None, "pass", f"{count} keys loaded strictly into '{ctx.fixture.task}'")]


for _kind in FIXTURE_TASKS:
    rows_check(_kind, "state_dict")(_strict_load)


# -- pretrain.pt -------------------------------------------------------------------------------------------
def _pretrain(ctx: FixtureContext) -> ALBEFPretrain:
    """The fixture's model, typed."""
    return cast(ALBEFPretrain, ctx.model)


def _pretrain_image(ctx: FixtureContext) -> ImageEncoding:
    """``visual_encoder(image)`` and its normalised projection (shared by several outputs)."""
    return ctx.memo("image", lambda: _pretrain(ctx).encode_image(ctx.fixture.inputs["image"]))


def _pretrain_text(ctx: FixtureContext) -> TextEncoding:
    """The text-mode pass (layers ``[0, fusion_layer)``) and its normalised projection."""
    inputs = ctx.fixture.inputs
    return ctx.memo("text", lambda: _pretrain(ctx).encode_text(inputs["input_ids"], inputs["attention_mask"]))


@output_check("pretrain", "image_embeds")
def _image_embeds(ctx: FixtureContext) -> Tensor:
    """ViT tokens (B, 1+N, D)."""
    return _pretrain_image(ctx).embeds


@output_check("pretrain", "text_embeds")
def _text_embeds(ctx: FixtureContext) -> Tensor:
    """Text-mode states (B, L, H)."""
    return _pretrain_text(ctx).states


@output_check("pretrain", "image_feat")
def _image_feat(ctx: FixtureContext) -> Tensor:
    """Normalised ``vision_proj`` of the image [CLS] (B, E)."""
    return _pretrain_image(ctx).feat


@output_check("pretrain", "text_feat")
def _text_feat(ctx: FixtureContext) -> Tensor:
    """Normalised ``text_proj`` of the text [CLS] (B, E)."""
    return _pretrain_text(ctx).feat


@output_check("pretrain", "sim_i2t")
def _sim_i2t(ctx: FixtureContext) -> Tensor:
    """In-batch ``image_feat @ text_feat.T / temp`` (B, B), no queue."""
    return _pretrain(ctx).similarity(_pretrain_image(ctx).feat, _pretrain_text(ctx).feat)[0]


@output_check("pretrain", "sim_t2i")
def _sim_t2i(ctx: FixtureContext) -> Tensor:
    """In-batch ``text_feat @ image_feat.T / temp`` (B, B), no queue."""
    return _pretrain(ctx).similarity(_pretrain_image(ctx).feat, _pretrain_text(ctx).feat)[1]


@output_check("pretrain", "fusion_last_hidden_state")
def _fusion(ctx: FixtureContext) -> Tensor:
    """Fusion layers on the matching (image i, text i) pairs (B, L, H)."""
    return _pretrain(ctx).fuse(_pretrain_text(ctx), _pretrain_image(ctx).embeds)


@output_check("pretrain", "itm_logits")
def _itm_logits(ctx: FixtureContext) -> Tensor:
    """ITM logits of every (image i, text j) pair (Bi, Bt, 2), all pairs in one fusion batch."""
    return all_pairs_itm_logits(_pretrain(ctx), _pretrain_image(ctx).embeds, _pretrain_text(ctx))


def all_pairs_itm_logits(model: ContrastiveALBEF, image_embeds: Tensor, text: TextEncoding) -> Tensor:
    """ITM logits of every image x text pair through one batched fusion pass.

    Args:
        model: A contrastive ALBEF model.
        image_embeds: Image tokens (Bi, 1+N, D).
        text: Text-mode encoding of Bt texts.

    Returns:
        Logits (Bi, Bt, 2); ``[i, j]`` pairs image i with text j.
    """
    num_images, num_texts = image_embeds.shape[0], text.states.shape[0]
    pairs = TextEncoding(
        states=text.states.repeat(num_images, 1, 1),  # (Bi*Bt, L, H): text j at row i*Bt + j
        mask=text.mask.repeat(num_images, 1),
        feat=text.feat.repeat(num_images, 1),
    )
    images = image_embeds.repeat_interleave(num_texts, dim=0)  # (Bi*Bt, 1+N, D): image i at row i*Bt + j
    return model.itm_logits(model.fuse(pairs, images)).view(num_images, num_texts, -1)


@output_check("pretrain", "mlm_logits")
def _mlm_logits(ctx: FixtureContext) -> Tensor:
    """All layers on ``mlm_input_ids`` with cross-attention to the image, then the MLM head (B, L, V)."""
    inputs = ctx.fixture.inputs
    image_embeds = _pretrain_image(ctx).embeds
    return _pretrain(ctx).mlm_logits(inputs["mlm_input_ids"], inputs["attention_mask"], image_embeds)


# -- retrieval.pt ------------------------------------------------------------------------------------------
def pad_token_lists(texts: Sequence[Sequence[int]], max_length: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """Pad ``[CLS] ... [SEP]`` id lists to ``max_length`` (``padding='max_length', truncation=True``).

    A longer text keeps its first ``max_length - 1`` ids and its final ``[SEP]``.

    Returns:
        Token ids (N, max_length) and the 0/1 attention mask (N, max_length), both int64.
    """
    ids = torch.full((len(texts), max_length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), max_length), dtype=torch.long)
    for row, text in enumerate(texts):
        kept = list(text) if len(text) <= max_length else [*text[: max_length - 1], text[-1]]
        ids[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
        mask[row, : len(kept)] = 1
    return ids, mask


def _retrieval_texts(ctx: FixtureContext) -> tuple[Tensor, Tensor]:
    """The evaluation texts as the official loop tokenised them (padded to ``max_length``)."""
    inputs, pad_id = ctx.fixture.inputs, _pad_id(ctx.fixture.config)
    return ctx.memo("texts", lambda: pad_token_lists(inputs["texts"], int(inputs["max_length"]), pad_id))


def _pad_id(config: Any) -> int:
    """The padding token id of a fixture."""
    return int(config.get("special_token_ids", {}).get("pad", config["bert_config"]["pad_token_id"]))


@output_check("retrieval", "text_input_ids_as_used")
def _text_ids_as_used(ctx: FixtureContext) -> Tensor:
    """Evaluation text ids padded to ``max_length`` (N, 30)."""
    return _retrieval_texts(ctx)[0]


@output_check("retrieval", "text_attention_mask_as_used")
def _text_mask_as_used(ctx: FixtureContext) -> Tensor:
    """Their attention mask (N, 30)."""
    return _retrieval_texts(ctx)[1]


@output_check("retrieval", "itc_sims_matrix")
def _itc_sims_matrix(ctx: FixtureContext) -> Tensor:
    """Evaluation ITC similarity ``image_feat @ text_feat.T`` without temperature (Ni, Nt)."""
    model = cast(ALBEFRetrieval, ctx.model)
    inputs = ctx.fixture.inputs
    text_feat = model.encode_text(*_retrieval_texts(ctx)).feat
    # The official evaluation feeds images through a loader in batches of ``loader_batch_size``.
    batches = inputs["image"].split(int(inputs.get("loader_batch_size", len(inputs["image"]))))
    image_feat = torch.cat([model.encode_image(batch).feat for batch in batches])
    return image_feat @ text_feat.T


# -- vqa.pt ------------------------------------------------------------------------------------------------
def _question_states(ctx: FixtureContext) -> Tensor:
    """The question encoder with cross-attention to the image (Q, Lq, H)."""
    inputs = ctx.fixture.inputs
    model = cast(ALBEFVQA, ctx.model)
    return ctx.memo(
        "question_states",
        lambda: model.encode_question(
            inputs["image"], inputs["question_input_ids"], inputs["question_attention_mask"]
        ),
    )


def _ranked_answers(ctx: FixtureContext) -> RankedAnswers:
    """Official answer ranking (first-token top-k, re-scored with the first token counted twice)."""
    inputs = ctx.fixture.inputs
    model = cast(ALBEFVQA, ctx.model)
    return ctx.memo(
        "ranked",
        lambda: model.rank_answers(
            _question_states(ctx),
            inputs["question_attention_mask"],
            inputs["answer_list_input_ids"],
            inputs["answer_list_attention_mask"],
            k=int(inputs["k_test"]),
            pad_id=_pad_id(ctx.fixture.config),
            scoring="official",
        ),
    )


@output_check("vqa", "question_states")
def _vqa_question_states(ctx: FixtureContext) -> Tensor:
    """Question states after all layers (Q, Lq, H)."""
    return _question_states(ctx)


@output_check("vqa", "topk_ids")
def _vqa_topk_ids(ctx: FixtureContext) -> Tensor:
    """Indices into the answer list, best first (Q, k); compared exactly."""
    return _ranked_answers(ctx).ids


@output_check("vqa", "topk_probs")
def _vqa_topk_probs(ctx: FixtureContext) -> Tensor:
    """Softmax over the k re-ranked scores (Q, k)."""
    return _ranked_answers(ctx).probs


# -- nlvr.pt and ve.pt -------------------------------------------------------------------------------------
@output_check("nlvr", "logits")
def _nlvr_logits(ctx: FixtureContext) -> Tensor:
    """Two-image classifier logits (B, 2)."""
    inputs = ctx.fixture.inputs
    model = cast(ALBEFNLVR, ctx.model)
    return model.logits(inputs["image0"], inputs["image1"], inputs["input_ids"], inputs["attention_mask"])


@output_check("ve", "logits")
def _ve_logits(ctx: FixtureContext) -> Tensor:
    """Entailment logits (B, 3)."""
    inputs = ctx.fixture.inputs
    return cast(ALBEFVE, ctx.model).logits(inputs["image"], inputs["input_ids"], inputs["attention_mask"])
