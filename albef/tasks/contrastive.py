"""The ITC and ITM computations shared by pretraining and retrieval finetuning.

They take the model and already-computed encodings, so the training steps, ``albef verify-reference`` (which
feeds the official random draws) and the tests all run the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from albef.data.tokenizer import TokenBatch
from albef.engine.distributed import all_gather_cat
from albef.losses import contrastive_targets, itc_loss, itm_loss, negative_weights, sample_negatives
from albef.losses.itm import NegativeSamples, Sampler, exclusion_mask
from albef.models.albef import ContrastiveALBEF, ImageEncoding, TextEncoding

NEGATIVE_STRATEGIES = ("hard", "random")


def check_strategy(strategy: str, what: str) -> None:
    """Raise a ``ValueError`` naming ``what`` unless ``strategy`` is one of :data:`NEGATIVE_STRATEGIES`."""
    if strategy not in NEGATIVE_STRATEGIES:
        raise ValueError(f"unknown {what} strategy {strategy!r}; valid: {', '.join(NEGATIVE_STRATEGIES)}")


@dataclass
class ITCResult:
    """The ITC loss and the student similarities against [momentum batch | queue] (B, B + K)."""

    loss: Tensor
    sim_i2t: Tensor
    sim_t2i: Tensor


def itc_with_queue(
    model: ContrastiveALBEF,
    image: ImageEncoding,
    text: TextEncoding,
    image_m: ImageEncoding,
    text_m: TextEncoding,
    alpha: float,
    distill: bool = True,
    idx: Tensor | None = None,
) -> ITCResult:
    """ITC over the local momentum batch plus the queue, with optional distillation and id positives."""
    queue = model.queue
    image_all = torch.cat([image_m.feat.T, queue.image_queue.clone().detach()], dim=1)
    text_all = torch.cat([text_m.feat.T, queue.text_queue.clone().detach()], dim=1)
    sim_i2t = image.feat @ text_all / model.temp
    sim_t2i = text.feat @ image_all / model.temp
    idx_all = None if idx is None else torch.cat([idx.view(1, -1), queue.idx_queue.clone().detach()], dim=1)
    targets = contrastive_targets(sim_i2t.shape[0], sim_i2t.shape[1], idx, idx_all, device=sim_i2t.device)
    if distill:
        with torch.no_grad():
            sim_i2t_m, sim_t2i_m = image_m.feat @ text_all / model.temp, text_m.feat @ image_all / model.temp
        loss = itc_loss(sim_i2t, sim_t2i, targets, sim_i2t_m, sim_t2i_m, alpha)
    else:
        loss = itc_loss(sim_i2t, sim_t2i, targets)
    return ITCResult(loss, sim_i2t, sim_t2i)


def enqueue_gathered(
    model: ContrastiveALBEF, image_m: ImageEncoding, text_m: TextEncoding, idx: Tensor | None = None
) -> None:
    """Write the momentum features of the global batch (all ranks) into the queue."""
    gathered_idx = None if idx is None else all_gather_cat(idx)
    model.queue.enqueue(all_gather_cat(image_m.feat), all_gather_cat(text_m.feat), gathered_idx)


def draw_negatives(
    sim_i2t: Tensor,
    sim_t2i: Tensor,
    idx: Tensor | None = None,
    strategy: str = "hard",
    sample: Sampler = sample_negatives,
) -> NegativeSamples:
    """ITM negatives among the first B columns (the local momentum batch) of the ITC similarities.

    Args:
        sim_i2t: Image-to-text ITC similarities (B, B + K).
        sim_t2i: Text-to-image ITC similarities (B, B + K).
        idx: Image ids: samples of the same image are never negatives of each other.
        strategy: ``hard`` (the official sampling, weights ``softmax(sim)``) or ``random`` (uniform over the
            valid entries: for data where the most similar other caption is often also true of the image,
            see ``ModelConfig.itm_negatives``).
        sample: How the draw is made: :func:`~albef.losses.itm.sample_negatives`, or the reference checks'
            :func:`~albef.losses.itm.sample_negatives_in_order`.
    """
    batch = sim_i2t.shape[0]
    exclude = exclusion_mask(batch, idx, device=sim_i2t.device)
    check_strategy(strategy, "ITM negative")
    with torch.no_grad():
        if strategy == "random":
            uniform = (~exclude).float()
            return sample(uniform, uniform, exclude)
        w_t2i = negative_weights(sim_t2i[:, :batch], exclude)
        w_i2t = negative_weights(sim_i2t[:, :batch], exclude)
    return sample(w_t2i, w_i2t, exclude)


@dataclass
class ExtraPairs:
    """ITM pairs beyond the official ones (``data.itm_text_negatives``): caption n about image ``rows[n]`` of the
    batch, with ITM label ``labels[n]`` (0: known to be false of it; 1: the true caption a false one was made
    from)."""

    text: TokenBatch
    rows: Tensor
    labels: Tensor


def itm_with_negatives(
    model: ContrastiveALBEF,
    image: ImageEncoding,
    text: TextEncoding,
    negatives: NegativeSamples,
    fused_pos: Tensor,
    extra_pairs: ExtraPairs | None = None,
) -> Tensor:
    """ITM loss on B positives and the valid negatives: (text b, image neg(b)) and (text neg(b), image b), and
    with ``extra_pairs`` also each of those, labelled as given (not in the official recipe)."""
    has_img, has_txt = negatives.image_for_text >= 0, negatives.text_for_image >= 0
    neg_img = negatives.image_for_text[has_img]
    neg_txt = negatives.text_for_image[has_txt]
    texts = TextEncoding(
        torch.cat([text.states[has_img], text.states[neg_txt]]),
        torch.cat([text.mask[has_img], text.mask[neg_txt]]),
        text.feat,
    )
    images = torch.cat([image.embeds[neg_img], image.embeds[has_txt]])
    pos_logits = [model.itm_logits(fused_pos)]
    neg_logits = [model.itm_logits(model.fuse(texts, images))] if images.shape[0] else []
    if extra_pairs is not None:
        tokens = extra_pairs.text
        extra = model.encode_text(tokens.input_ids, tokens.attention_mask)
        logits = model.itm_logits(model.fuse(extra, image.embeds[extra_pairs.rows]))
        true = extra_pairs.labels.bool()
        pos_logits.append(logits[true])
        neg_logits.append(logits[~true])
    return itm_loss(torch.cat(pos_logits), torch.cat(neg_logits) if neg_logits else pos_logits[0][:0])


DrawNegatives = Callable[[ITCResult], NegativeSamples]
"""Gives the ITM negatives of a step from its ITC similarities (a recorded trace ignores them)."""


@dataclass
class ContrastiveStep:
    """What the ITC + ITM part of one training forward produced.

    Attributes:
        itc: The ITC loss and the student similarities (B, B + K).
        itm_loss: The ITM loss (scalar).
        negatives: The negatives the ITM loss used.
        image: Online image encoding (the MLM student cross-attends to its tokens).
        image_m: Teacher image encoding (the MLM teacher cross-attends to its tokens).
    """

    itc: ITCResult
    itm_loss: Tensor
    negatives: NegativeSamples
    image: ImageEncoding
    image_m: ImageEncoding


def contrastive_step(
    model: ContrastiveALBEF,
    image: Tensor,
    text: TokenBatch,
    alpha: float,
    draw: DrawNegatives,
    idx: Tensor | None = None,
    distill: bool = True,
    extra_pairs: ExtraPairs | None = None,
) -> ContrastiveStep:
    """ITC with queue + ITM with hard negatives, in the order of the official training forward.

    The model is changed as the official forward changes it: one EMA step of the teachers, then the momentum
    features (and ``idx``) are enqueued. The temperature is not clamped here (only pretraining clamps it).

    Args:
        model: A contrastive ALBEF model (pretraining or retrieval).
        image: Images (B, 3, R, R).
        text: Token ids and attention mask (B, L).
        alpha: Distillation weight.
        draw: Gives the ITM negatives from the ITC similarities.
        idx: Image ids (B,) for id positives (retrieval), or ``None`` for diagonal targets.
        distill: Mix the teacher's similarities into the ITC targets.
        extra_pairs: Extra ITM pairs (see :func:`itm_with_negatives`), scored after the official passes.

    Returns:
        The :class:`ContrastiveStep`.
    """
    image_enc = model.encode_image(image)
    text_enc = model.encode_text(text.input_ids, text.attention_mask)
    model.update_momentum()
    image_m = model.encode_image_m(image)
    text_m = model.encode_text_m(text.input_ids, text.attention_mask)
    itc = itc_with_queue(model, image_enc, text_enc, image_m, text_m, alpha, distill, idx)
    enqueue_gathered(model, image_m, text_m, idx)
    fused_pos = model.fuse(text_enc, image_enc.embeds)
    negatives = draw(itc)
    itm = itm_with_negatives(model, image_enc, text_enc, negatives, fused_pos, extra_pairs)
    return ContrastiveStep(itc, itm, negatives, image_enc, image_m)
