"""``retrieval_metrics``: hand-computed cases, the tie rule, an independent itm_eval, the real COCO layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from albef.data.formats import read_retrieval_eval
from albef.data.records import RetrievalEvalSet
from albef.evaluation import retrieval_metrics
from albef.evaluation.metrics import OFFICIAL_KEYS, RANK_KEYS, ranks_of_targets

COCO_TEST = "coco_karpathy_test_5k__albef_format__CVLR-RD.json"

# Three images with 2, 1 and 3 captions.
IMG2TXT = [[0, 1], [2], [3, 4, 5]]
TXT2IMG = [0, 0, 1, 2, 2, 2]
SCORES_I2T = torch.tensor(
    [
        [0.1, 0.9, 0.8, 0.2, 0.3, 0.4],  # caption 1 first: rank 0
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # caption 2 third: rank 2
        [0.6, 0.5, 0.4, 0.1, 0.2, 0.3],  # best caption (5) fourth: rank 3
    ]
)
SCORES_T2I = torch.tensor(
    [
        [0.9, 0.1, 0.2],  # text 0 -> image 0: rank 0
        [0.5, 0.6, 0.1],  # text 1 -> image 0: rank 1
        [0.1, 0.9, 0.2],  # text 2 -> image 1: rank 0
        [0.5, 0.6, 0.1],  # text 3 -> image 2: rank 2
        [0.1, 0.6, 0.5],  # text 4 -> image 2: rank 1
        [0.1, 0.2, 0.3],  # text 5 -> image 2: rank 0
    ]
)


def test_hand_computed_case() -> None:
    m = retrieval_metrics(SCORES_I2T, SCORES_T2I, IMG2TXT, TXT2IMG)
    # image ranks 0, 2, 3; text ranks 0, 1, 0, 2, 1, 0
    assert m["txt_r1"] == pytest.approx(100 / 3)
    assert (m["txt_r5"], m["txt_r10"]) == (100.0, 100.0)
    assert m["img_r1"] == pytest.approx(50.0)
    assert (m["img_r5"], m["img_r10"]) == (100.0, 100.0)
    assert m["txt_r_mean"] == pytest.approx((100 / 3 + 200) / 3)
    assert m["img_r_mean"] == pytest.approx(250 / 3)
    assert m["r_mean"] == pytest.approx((m["txt_r_mean"] + m["img_r_mean"]) / 2)
    assert m["txt_mean_rank"] == pytest.approx(8 / 3)  # 1-based 1, 3, 4
    assert m["txt_median_rank"] == 3.0
    assert m["img_mean_rank"] == pytest.approx(10 / 6)  # 1-based 1, 2, 1, 3, 2, 1
    assert m["img_median_rank"] == 1.5  # an even count averages the middle two


def test_returns_the_official_keys_in_order_then_the_ranks() -> None:
    m = retrieval_metrics(SCORES_I2T, SCORES_T2I, IMG2TXT, TXT2IMG)
    assert list(m) == [*OFFICIAL_KEYS, *RANK_KEYS]
    assert all(isinstance(v, float) for v in m.values())


def test_image_rank_is_the_best_over_any_number_of_captions() -> None:
    # Image 2 has three captions; moving its best one to the top makes it rank 0 whatever the others do.
    scores = SCORES_I2T.clone()
    scores[2, 4] = 10.0
    assert retrieval_metrics(scores, SCORES_T2I, IMG2TXT, TXT2IMG)["txt_r1"] == pytest.approx(200 / 3)


@pytest.mark.parametrize(("ties", "expected"), [("lower_index_first", 2), ("higher_index_first", 4)])
def test_tie_rule(ties: str, expected: int) -> None:
    """Seven equal scores: the target at column 2 is third (lower first) or fifth (higher first)."""
    scores = torch.zeros(1, 7)
    ranks = ranks_of_targets(scores, torch.tensor([0]), torch.tensor([2]), ties=ties)  # type: ignore[arg-type]
    assert ranks.tolist() == [expected]


def test_ties_only_below_the_top_k_leave_recall_unchanged() -> None:
    """The official -100 fill: ties outside the top k (>= 10) change the mean rank, never R@1/5/10."""
    n, k = 40, 10
    scores = torch.full((n, n), -100.0)
    for q in range(n):  # each query's top k: itself and the next k - 1 (query 0 misses itself)
        top = [(q + j) % n for j in range(1 if q == 0 else 0, k + (1 if q == 0 else 0))]
        scores[q, top] = torch.linspace(2, 1, k)
    links = [[i] for i in range(n)]
    low = retrieval_metrics(scores, scores, links, list(range(n)))
    high = retrieval_metrics(scores, scores, links, list(range(n)), ties="higher_index_first")
    assert all(low[key] == high[key] for key in OFFICIAL_KEYS)
    assert low["txt_r10"] == pytest.approx(100 * (n - 1) / n)
    assert low["txt_mean_rank"] != high["txt_mean_rank"]


def official_itm_eval(
    i2t: Tensor, t2i: Tensor, img2txt: list[list[int]], txt2img: list[int]
) -> dict[str, float]:
    """The official arithmetic with numpy (a stable sort: equal scores keep the lower index first)."""

    def recalls(ranks: np.ndarray) -> list[float]:
        return [100.0 * float((ranks < k).mean()) for k in (1, 5, 10)]

    txt = np.array([min(np.where(np.argsort(-row, kind="stable") == t)[0][0] for t in img2txt[i])
                    for i, row in enumerate(i2t.numpy())])  # fmt: skip
    img = np.array(
        [np.where(np.argsort(-row, kind="stable") == txt2img[i])[0][0] for i, row in enumerate(t2i.numpy())]
    )
    tr, ir = recalls(txt), recalls(img)
    out = dict(zip(("txt_r1", "txt_r5", "txt_r10"), tr, strict=True)) | dict(
        zip(("img_r1", "img_r5", "img_r10"), ir, strict=True)
    )
    out["txt_r_mean"], out["img_r_mean"] = sum(tr) / 3, sum(ir) / 3
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out


def test_matches_an_independent_itm_eval_on_random_scores() -> None:
    gen = torch.Generator().manual_seed(0)
    n_img, per = 30, 5
    img2txt = [list(range(i * per, (i + 1) * per)) for i in range(n_img)]
    txt2img = [i for i in range(n_img) for _ in range(per)]
    i2t = torch.randn(n_img, n_img * per, generator=gen)
    t2i = torch.randn(n_img * per, n_img, generator=gen)
    ours = retrieval_metrics(i2t, t2i, img2txt, txt2img)
    ref = official_itm_eval(i2t, t2i, img2txt, txt2img)
    assert {k: ours[k] for k in OFFICIAL_KEYS} == pytest.approx(ref)


def test_numpy_arrays_lists_and_the_official_dicts_give_the_itm_eval_numbers() -> None:
    # The official itm_eval takes numpy score matrices and dicts {image: [texts]}, {text: image}.
    gen = torch.Generator().manual_seed(1)
    n_img, per = 20, 5
    img2txt = [list(range(i * per, (i + 1) * per)) for i in range(n_img)]
    txt2img = [i for i in range(n_img) for _ in range(per)]
    i2t = torch.randn(n_img, n_img * per, generator=gen)
    t2i = torch.randn(n_img * per, n_img, generator=gen)
    ref = official_itm_eval(i2t, t2i, img2txt, txt2img)
    as_numpy = retrieval_metrics(i2t.numpy(), t2i.numpy(), dict(enumerate(img2txt)), dict(enumerate(txt2img)))
    as_lists = retrieval_metrics(i2t.tolist(), t2i.tolist(), img2txt, np.array(txt2img))
    as_tensors = retrieval_metrics(i2t, t2i, img2txt, torch.tensor(txt2img))
    for got in (as_numpy, as_lists, as_tensors):
        assert {k: got[k] for k in OFFICIAL_KEYS} == pytest.approx(ref)
    assert as_numpy == as_tensors  # float32 arrays keep their dtype: the same ranks exactly
    with pytest.raises(ValueError, match="2-D score matrix"):
        retrieval_metrics(i2t.numpy()[0], t2i.numpy(), img2txt, txt2img)


@pytest.mark.parametrize(
    ("i2t_shape", "img2txt", "txt2img", "message"),
    [
        ((3, 5), IMG2TXT, TXT2IMG, "do not fit"),
        ((3, 6), [[0, 1], [2], [3, 4, 6]], TXT2IMG, "outside"),
        ((3, 6), [[0, 1], [], [2, 3, 4, 5]], TXT2IMG, "no caption"),
        ((3, 6), IMG2TXT, [0, 0, 1, 2, 2, 3], "outside"),
    ],
)
def test_inconsistent_inputs_are_errors(
    i2t_shape: tuple[int, int], img2txt: list[list[int]], txt2img: list[int], message: str
) -> None:
    i2t = torch.zeros(i2t_shape)
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(i2t, i2t.T.contiguous(), img2txt, txt2img)


# -- the real COCO Karpathy test layout -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco(real_data_dir: Path) -> RetrievalEvalSet:
    return read_retrieval_eval(real_data_dir / COCO_TEST)


def test_real_coco_test_structure(coco: RetrievalEvalSet) -> None:
    assert (coco.num_images, coco.num_texts) == (5000, 25009)
    counts = [len(t) for t in coco.img2txt]
    assert counts.count(6) == 9 and counts.count(5) == 4991


def ranked_row(n: int, targets: list[int], position: int, best: int) -> Tensor:
    """A score row over ``n`` candidates where ``best`` (one of ``targets``) is at 0-based ``position`` and
    the other targets rank below every non-target."""
    others = [c for c in range(n) if c not in targets]
    order = others[:position] + [best] + others[position:] + [t for t in targets if t != best]
    row = torch.empty(n)
    row[torch.tensor(order)] = torch.linspace(1.0, 0.0, n)
    return row


def test_real_coco_layout_with_six_caption_images(coco: RetrievalEvalSet) -> None:
    """Recall over a subset of the real test set (its first 120 images and all 9 with six captions)."""
    six = [i for i, t in enumerate(coco.img2txt) if len(t) == 6]
    keep = sorted(set(range(120)) | set(six))
    split = RetrievalEvalSet.from_groups(
        (coco.images[i], [coco.texts[t] for t in coco.img2txt[i]]) for i in keep
    )
    n_img, n_txt = split.num_images, split.num_texts
    # Image q ranks its *last* caption at position q % 12 (the sixth caption for six-caption images).
    img_pos = [q % 12 for q in range(n_img)]
    i2t = torch.stack(
        [ranked_row(n_txt, split.img2txt[q], img_pos[q], split.img2txt[q][-1]) for q in range(n_img)]
    )
    txt_pos = [t % 7 for t in range(n_txt)]
    t2i = torch.stack(
        [ranked_row(n_img, [split.txt2img[t]], txt_pos[t], split.txt2img[t]) for t in range(n_txt)]
    )
    m = retrieval_metrics(i2t, t2i, split.img2txt, split.txt2img)
    for k in (1, 5, 10):
        assert m[f"txt_r{k}"] == pytest.approx(100 * sum(p < k for p in img_pos) / n_img)
        assert m[f"img_r{k}"] == pytest.approx(100 * sum(p < k for p in txt_pos) / n_txt)
    assert sum(len(t) == 6 for t in split.img2txt) == 9
    assert json.dumps(m)  # JSON-ready floats
