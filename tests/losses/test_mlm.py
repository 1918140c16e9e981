"""MLM masking (statistics, exclusions, official random order) and the distilled MLM loss."""

from __future__ import annotations

import math

import pytest
import torch

from albef.losses import mask_tokens, mlm_loss

PAD, CLS, MASK, VOCAB = 0, 101, 103, 1000


def _batch(rows: int = 400, length: int = 100, seed: int = 0) -> torch.Tensor:
    """``[CLS] words... [PAD]...`` with random lengths: a large batch for masking statistics."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(104, VOCAB, (rows, length), generator=gen)
    lengths = torch.randint(length // 2, length + 1, (rows, 1), generator=gen)
    ids[torch.arange(length)[None] >= lengths] = PAD
    ids[:, 0] = CLS
    return ids


def _mask(ids: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask with the fixture's special ids and a seeded generator."""
    return mask_tokens(ids, VOCAB, MASK, PAD, CLS, generator=torch.Generator().manual_seed(seed))


def test_selection_rate_and_labels() -> None:
    ids = _batch()
    masked, labels = _mask(ids)
    selected = labels != -100
    eligible = (ids != PAD) & (ids != CLS)
    assert not selected[~eligible].any()  # [PAD] and [CLS] are never selected
    rate = selected.sum().item() / eligible.sum().item()
    assert rate == pytest.approx(0.15, abs=0.01)  # ~30k eligible tokens: sigma 0.002
    assert torch.equal(labels[selected], ids[selected])
    assert (labels[~selected] == -100).all()
    assert torch.equal(masked[~selected], ids[~selected])  # only selected tokens change


def test_selected_tokens_split_80_10_10() -> None:
    ids = _batch()
    masked, labels = _mask(ids)
    selected = labels != -100
    total = selected.sum().item()
    to_mask = (masked[selected] == MASK).sum().item() / total
    kept = (masked[selected] == ids[selected]).sum().item() / total
    changed = 1 - to_mask - kept
    # ~4.5k selected: sigma <= 0.006; a random id equals [MASK] or the original with probability 2e-3.
    assert to_mask == pytest.approx(0.8, abs=0.03)
    assert kept == pytest.approx(0.1, abs=0.025)
    assert changed == pytest.approx(0.1, abs=0.025)


def test_random_replacements_are_uniform_over_the_whole_vocabulary() -> None:
    # Every token selected (probability 1) in a 10-id vocabulary: random ids may be special tokens too.
    vocab, original, mask_id = 10, 7, 4
    ids = torch.full((200, 200), original)
    gen = torch.Generator().manual_seed(0)
    masked, _ = mask_tokens(ids, vocab, mask_id, pad_id=0, cls_id=1, probability=1.0, generator=gen)
    counts = torch.bincount(masked.flatten(), minlength=vocab)
    others = [v for v in range(vocab) if v not in (original, mask_id)]
    # 40k tokens x 10% random / 10 ids = 400 expected per id (sigma 20).
    assert all(300 < counts[v].item() < 500 for v in others), counts.tolist()
    assert masked.min() >= 0 and masked.max() < vocab


def test_masking_is_deterministic_with_a_generator_and_leaves_the_input_alone() -> None:
    ids = _batch(rows=8, length=20)
    before = ids.clone()
    first, second, other = _mask(ids, seed=3), _mask(ids, seed=3), _mask(ids, seed=4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])
    assert torch.equal(ids, before)


def test_default_generator_follows_the_official_draw_order() -> None:
    ids = _batch(rows=6, length=16, seed=1)
    torch.manual_seed(123)
    masked, labels = mask_tokens(ids, VOCAB, MASK, PAD, CLS)
    # The official ALBEF.mask: bernoulli(p), bernoulli(0.8), bernoulli(0.5), randint(V), in this order.
    torch.manual_seed(123)
    selected = torch.bernoulli(torch.full(ids.shape, 0.15)).bool()
    selected[ids == PAD] = False
    selected[ids == CLS] = False
    replaced = torch.bernoulli(torch.full(ids.shape, 0.8)).bool() & selected
    randomised = torch.bernoulli(torch.full(ids.shape, 0.5)).bool() & selected & ~replaced
    words = torch.randint(VOCAB, ids.shape, dtype=torch.long)
    expected = ids.clone()
    expected[replaced] = MASK
    expected[randomised] = words[randomised]
    assert torch.equal(masked, expected)
    assert torch.equal(labels, torch.where(selected, ids, torch.full_like(ids, -100)))


# -- the loss ----------------------------------------------------------------------------------------------
LOGITS = [[[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.0, -0.5], [2.0, 1.0, 0.0, 0.0]]]  # (1, 3, 4)
TEACHER = [[[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 3.0]]]
LABELS = [[-100, 2, 0]]
ALPHA = 0.4


def _log_softmax(row: list[float]) -> list[float]:
    lse = math.log(sum(math.exp(x) for x in row))
    return [x - lse for x in row]


def _hand_loss(student_log_probs: list[list[float]]) -> float:
    """``(1 - alpha) * mean CE + alpha * mean soft CE`` over the masked positions of ``LABELS``."""
    ce, distill = [], []
    for pos, label in enumerate(LABELS[0]):
        if label == -100:
            continue
        soft = [math.exp(x) for x in _log_softmax(TEACHER[0][pos])]
        ce.append(-_log_softmax(LOGITS[0][pos])[label])
        distill.append(-sum(s * lp for s, lp in zip(soft, student_log_probs[pos], strict=True)))
    return (1 - ALPHA) * sum(ce) / len(ce) + ALPHA * sum(distill) / len(distill)


def test_mlm_loss_matches_a_hand_computation() -> None:
    expected = _hand_loss([_log_softmax(row) for row in LOGITS[0]])
    loss = mlm_loss(torch.tensor(LOGITS), torch.tensor(LABELS), torch.tensor(TEACHER), ALPHA)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_mlm_loss_without_teacher_is_cross_entropy_on_masked_positions() -> None:
    expected = (-_log_softmax(LOGITS[0][1])[2] - _log_softmax(LOGITS[0][2])[0]) / 2
    assert mlm_loss(torch.tensor(LOGITS), torch.tensor(LABELS)).item() == pytest.approx(expected, abs=1e-6)


def test_legacy_sequence_axis_differs_and_matches_its_own_hand_computation() -> None:
    # The 2021 code took the student's log-softmax over the sequence axis (for each vocabulary entry).
    columns = [_log_softmax([LOGITS[0][pos][v] for pos in range(3)]) for v in range(4)]
    by_position = [[columns[v][pos] for v in range(4)] for pos in range(3)]
    expected = _hand_loss(by_position)
    logits, labels, teacher = torch.tensor(LOGITS), torch.tensor(LABELS), torch.tensor(TEACHER)
    legacy = mlm_loss(logits, labels, teacher, ALPHA, legacy_sequence_axis=True)
    assert legacy.item() == pytest.approx(expected, abs=1e-6)
    assert abs(legacy.item() - mlm_loss(logits, labels, teacher, ALPHA).item()) > 1e-2


@pytest.mark.parametrize("with_teacher", [False, True])
def test_empty_mask_gives_zero_and_a_finite_gradient(with_teacher: bool) -> None:
    logits = torch.tensor(LOGITS, requires_grad=True)
    teacher = torch.tensor(TEACHER) if with_teacher else None
    loss = mlm_loss(logits, torch.full((1, 3), -100), teacher, ALPHA)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
