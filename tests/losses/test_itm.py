"""ITM hard-negative sampling (exclusions, rows without a negative, underflow, parity mode) and the ITM loss."""

from __future__ import annotations

import math

import pytest
import torch

from albef.losses import itm_loss, negative_weights, sample_negatives
from albef.losses.itm import NegativeSamples, exclusion_mask, sample_negatives_in_order


def _draw(sim: torch.Tensor, idx: torch.Tensor | None = None, parity: bool = False) -> NegativeSamples:
    """Negatives for image->text similarities (B, B); texts use the transpose (``parity``: the official
    row-by-row order)."""
    exclude = exclusion_mask(sim.shape[0], idx)
    sample = sample_negatives_in_order if parity else sample_negatives
    return sample(negative_weights(sim.T, exclude), negative_weights(sim, exclude), exclude)


def _assert_valid(picks: torch.Tensor, exclude: torch.Tensor) -> None:
    """Every pick is a batch index that the row may use (-1 only for rows with nothing allowed)."""
    has_valid = (~exclude).any(dim=1)
    assert torch.equal(picks >= 0, has_valid)
    rows = torch.arange(len(picks))[has_valid]
    assert not exclude[rows, picks[has_valid]].any()


def test_exclusion_mask_is_the_diagonal_or_every_same_image_pair() -> None:
    assert torch.equal(exclusion_mask(3), torch.eye(3, dtype=torch.bool))
    idx = torch.tensor([4, 2, 4])
    expected = torch.tensor([[True, False, True], [False, True, False], [True, False, True]])
    assert torch.equal(exclusion_mask(3, idx), expected)


def test_weights_are_the_softmax_with_exclusions_zeroed() -> None:
    sim = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.5, 3.0], [0.0, 0.0, 0.0]])
    exclude = exclusion_mask(3)
    weights = negative_weights(sim, exclude)
    assert torch.allclose(weights, torch.softmax(sim, dim=1) * ~exclude)
    assert (weights.diagonal() == 0).all()


@pytest.mark.parametrize("with_ids", [False, True])
def test_sampler_never_returns_an_excluded_index(with_ids: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    idx = torch.tensor([0, 1, 1, 2, 0, 0, 3, 1]) if with_ids else None
    exclude = exclusion_mask(8, idx)
    for _ in range(300):
        # Sharp similarities that favour the excluded entries most: a leak would show up at once.
        sim = torch.randn(8, 8, generator=gen) + 8.0 * exclude
        out = sample_negatives(negative_weights(sim, exclude), negative_weights(sim.T, exclude), exclude, gen)
        _assert_valid(out.image_for_text, exclude)
        _assert_valid(out.text_for_image, exclude)


def test_parity_mode_never_returns_an_excluded_index() -> None:
    idx = torch.tensor([0, 1, 1, 2, 0])
    exclude = exclusion_mask(5, idx)
    torch.manual_seed(0)
    for _ in range(50):
        out = _draw(torch.randn(5, 5) + 8.0 * exclude, idx, parity=True)
        _assert_valid(out.image_for_text, exclude)
        _assert_valid(out.text_for_image, exclude)


@pytest.mark.parametrize("parity", [False, True])
def test_a_batch_of_one_image_has_no_negative(parity: bool) -> None:
    out = _draw(torch.randn(1, 1), parity=parity)
    assert out.image_for_text.tolist() == [-1] and out.text_for_image.tolist() == [-1]


@pytest.mark.parametrize("parity", [False, True])
def test_a_batch_of_one_shared_image_id_has_no_negative(parity: bool) -> None:
    out = _draw(torch.randn(4, 4), torch.full((4,), 7), parity=parity)
    assert out.image_for_text.tolist() == [-1] * 4 and out.text_for_image.tolist() == [-1] * 4


def test_rows_with_one_valid_entry_always_draw_it() -> None:
    idx = torch.tensor([1, 1, 2])
    out = _draw(torch.randn(3, 3, generator=torch.Generator().manual_seed(3)), idx)
    assert out.image_for_text[:2].tolist() == [2, 2]  # the only other image
    assert out.image_for_text[2].item() in (0, 1)


def test_rows_whose_valid_weights_underflow_draw_uniformly() -> None:
    # softmax([200, 0, 0, 0]) puts all float32 mass on the excluded diagonal: the valid weights are exactly 0.
    sim = 200.0 * torch.eye(4)
    exclude = exclusion_mask(4)
    weights = negative_weights(sim, exclude)
    assert (weights == 0).all()
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4, 4)
    for _ in range(600):
        out = sample_negatives(weights, weights, exclude, gen)
        counts[torch.arange(4), out.image_for_text] += 1
    assert (counts.diagonal() == 0).all()
    off_diagonal = counts[~exclude]
    assert (off_diagonal > 140).all() and (off_diagonal < 260).all()  # 200 expected each, > 4 sigma margin


def test_parity_and_vectorised_draws_are_both_valid_and_parity_replays_the_official_loop() -> None:
    gen = torch.Generator().manual_seed(5)
    sim = torch.randn(6, 6, generator=gen)
    exclude = exclusion_mask(6)
    w_t2i, w_i2t = negative_weights(sim.T, exclude), negative_weights(sim, exclude)
    vectorised = sample_negatives(w_t2i, w_i2t, exclude, gen)
    torch.manual_seed(11)
    parity = sample_negatives_in_order(w_t2i, w_i2t, exclude)
    for out in (vectorised, parity):
        _assert_valid(out.image_for_text, exclude)
        _assert_valid(out.text_for_image, exclude)
    # The official code: one multinomial(row, 1) per text (images), then one per image (texts).
    torch.manual_seed(11)
    images = [int(torch.multinomial(row, 1)) for row in w_t2i]
    texts = [int(torch.multinomial(row, 1)) for row in w_i2t]
    assert parity.image_for_text.tolist() == images and parity.text_for_image.tolist() == texts


def test_vectorised_draw_is_deterministic_with_a_generator() -> None:
    sim = torch.randn(5, 5, generator=torch.Generator().manual_seed(2))
    exclude = exclusion_mask(5)
    weights = negative_weights(sim, exclude)
    first = sample_negatives(weights, weights, exclude, torch.Generator().manual_seed(9))
    second = sample_negatives(weights, weights, exclude, torch.Generator().manual_seed(9))
    assert torch.equal(first.image_for_text, second.image_for_text)
    assert torch.equal(first.text_for_image, second.text_for_image)


def test_itm_loss_matches_a_hand_computation() -> None:
    pos = [[0.0, 2.0], [1.0, 0.5]]
    neg = [[1.0, 0.0], [0.0, 0.0], [-1.0, 3.0]]

    def nll(logits: list[float], label: int) -> float:
        return -(logits[label] - math.log(sum(math.exp(x) for x in logits)))

    expected = (sum(nll(p, 1) for p in pos) + sum(nll(n, 0) for n in neg)) / 5
    loss = itm_loss(torch.tensor(pos), torch.tensor(neg))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_itm_loss_without_negatives_uses_the_positives_only() -> None:
    pos = torch.tensor([[0.0, 2.0], [1.0, 0.5]])
    expected = torch.nn.functional.cross_entropy(pos, torch.ones(2, dtype=torch.long))
    assert torch.allclose(itm_loss(pos, pos[:0]), expected)


def test_random_strategy_ignores_similarity_and_draws_uniformly_among_valid_entries() -> None:
    from albef.tasks.contrastive import draw_negatives

    torch.manual_seed(0)
    batch = 4
    idx = torch.tensor([0, 0, 1, 2])  # samples 0 and 1 share an image
    # Hard sampling would almost always pick column 3 for every row: the similarities are peaked there.
    sim = torch.full((batch, batch + 8), -30.0)
    sim[:, 3] = 30.0
    counts = torch.zeros(batch, batch)
    for _ in range(2000):
        drawn = draw_negatives(sim, sim, idx, strategy="random")
        counts[torch.arange(batch), drawn.image_for_text] += 1
    valid = ~exclusion_mask(batch, idx)
    assert counts[~valid].sum() == 0  # never the same image
    share = counts / counts.sum(dim=1, keepdim=True)
    expected = valid.float() / valid.sum(dim=1, keepdim=True)
    torch.testing.assert_close(share, expected, atol=0.05, rtol=0)  # uniform, whatever the similarities
    hard = draw_negatives(sim, sim, idx, strategy="hard")
    assert hard.image_for_text[:3].tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match="unknown ITM negative strategy 'easy'"):
        draw_negatives(sim, sim, idx, strategy="easy")
