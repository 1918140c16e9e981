"""VQA answer ranking: chunking changes nothing; the two scorings differ by the first-token term only."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from albef.models import ALBEFVQA, RankedAnswers
from tests.models import PAD, SEP, images, texts, tiny_model

K = 4


@pytest.fixture(scope="module")
def setup() -> tuple[ALBEFVQA, Tensor, Tensor, Tensor, Tensor]:
    """Model, question states (3, Lq, H) and mask, answer list (10, 6) and mask: ``[CLS] words [SEP] pad``."""
    model = tiny_model("vqa")
    q_ids, q_mask = texts([10, 7, 4], seed=1)
    lengths = [3, 4, 5, 3, 6, 4, 3, 5, 4, 3]
    a_ids, a_mask = texts(lengths, pad_to=6, seed=2)
    a_ids[torch.arange(len(lengths)), torch.tensor(lengths) - 1] = SEP
    with torch.no_grad():
        states = model.encode_question(images(3), q_ids, q_mask)
    return model, states, q_mask, a_ids, a_mask


def _rank(setup: tuple, **kwargs: object) -> RankedAnswers:
    model, states, q_mask, a_ids, a_mask = setup
    return model.rank_answers(states, q_mask, a_ids, a_mask, k=K, pad_id=PAD, **kwargs)


def test_ranking_shapes_and_order(setup: tuple) -> None:
    ranked = _rank(setup)
    assert ranked.ids.shape == ranked.probs.shape == (3, K)
    assert ranked.ids.dtype == torch.long and int(ranked.ids.max()) < 10
    torch.testing.assert_close(ranked.probs.sum(1), torch.ones(3))
    assert bool((ranked.probs[:, :-1] >= ranked.probs[:, 1:]).all())


@pytest.mark.parametrize("chunk_size", [1, 5, 12, 100])
@pytest.mark.parametrize("scoring", ["official", "sequence"])
def test_chunking_does_not_change_the_ranking(setup: tuple, chunk_size: int, scoring: str) -> None:
    full = _rank(setup, scoring=scoring)
    chunked = _rank(setup, scoring=scoring, chunk_size=chunk_size)
    assert torch.equal(chunked.ids, full.ids)
    torch.testing.assert_close(chunked.probs, full.probs, atol=1e-6, rtol=1e-5)


def _first_token_logprob(setup: tuple) -> Tensor:
    """log p(first answer token | [CLS], question) for every (question, answer): (Q, A)."""
    model, states, q_mask, a_ids, _ = setup
    start = a_ids[:1, :1].expand(states.shape[0], 1)
    with torch.no_grad():
        logits = model.decoder_logits(start, torch.ones_like(start), states, q_mask)[:, 0]
    return logits.log_softmax(-1)[:, a_ids[:, 1]]


def _sequence_logprob(setup: tuple, question: int, answers: Tensor) -> Tensor:
    """Teacher-forced log-likelihood of ``answers`` (n,) for one question: (n,)."""
    model, states, q_mask, a_ids, a_mask = setup
    n = answers.shape[0]
    with torch.no_grad():
        nll = model.answer_nll(
            a_ids[answers],
            a_mask[answers],
            states[question].expand(n, -1, -1),
            q_mask[question].expand(n, -1),
            PAD,
        )
    return -nll


def _constant(values: Tensor) -> bool:
    return bool((values - values.mean()).abs().max() < 1e-4)


def test_scorings_differ_exactly_by_the_first_token_term(setup: tuple) -> None:
    official, sequence = _rank(setup, scoring="official"), _rank(setup, scoring="sequence")
    first = _first_token_logprob(setup)
    for q in range(3):
        # Both re-rank the same top-k candidates (chosen by the first-token probability).
        cands = official.ids[q].sort().values
        assert torch.equal(cands, sequence.ids[q].sort().values)
        assert torch.equal(cands, first[q].topk(K).indices.sort().values)
        log_off = official.probs[q].log()[official.ids[q].argsort()]  # per candidate in sorted-id order
        log_seq = sequence.probs[q].log()[sequence.ids[q].argsort()]
        # Softmax over k only adds a per-question constant to the log-scores.
        assert _constant(log_seq - _sequence_logprob(setup, q, cands))
        assert _constant(log_off - log_seq - first[q, cands])
        assert not _constant(first[q, cands]), "the first-token term must vary for the check to bite"
