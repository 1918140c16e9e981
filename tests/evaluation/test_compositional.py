"""Compositionality benchmarks: the metrics on hand-computed cases (ties included), the official-format readers
on files the tests write, the word-order perturbations, and the macro-average interval."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from albef.data.errors import DataError
from albef.data.formats_compositional import (
    read_aro_vg,
    read_caption_images,
    read_sugarcrepe,
    read_winoground,
    sugarcrepe_file,
)
from albef.data.word_order import PERTURBATIONS, order_examples, perturb, trigrams
from albef.evaluation.bootstrap import macro_percent_metric
from albef.evaluation.compositional import contrast_outcomes, macro_groups, winoground_outcomes
from albef.evaluation.compositional_evaluator import ContrastBenchmark, WinogroundBenchmark, side_by_side


def test_winoground_text_image_and_group_scores_by_hand() -> None:
    # s[n, caption, image]
    scores = torch.tensor(
        [
            [[0.9, 0.1], [0.2, 0.8]],  # every comparison right: text, image, group
            [[0.9, 0.95], [0.2, 0.8]],  # image 1 prefers caption 0 (.95 > .8): text fails; caption 0 image 1
            [[0.5, 0.1], [0.5, 0.8]],  # image 0 ties its two captions: text fails (strict); image holds
            [[0.3, 0.2], [0.1, 0.4]],  # right both ways
            [[0.1, 0.3], [0.2, 0.4]],  # text: .1 > .2 no; image: .1 > .3 no
        ]
    )
    out = winoground_outcomes(scores)
    assert out["text_score"].tolist() == [True, False, False, True, False]
    assert out["image_score"].tolist() == [True, False, True, True, False]
    assert out["group_score"].tolist() == [True, False, False, True, False]
    with pytest.raises(ValueError, match=r"\(N, 2, 2\)"):
        winoground_outcomes(torch.zeros(3, 4))


def test_contrast_outcomes_strict_or_ties_to_the_first_option() -> None:
    scores = torch.tensor([[1.0, 0.5, 0.2], [0.5, 0.5, 0.1], [0.2, 0.9, 0.1], [0.4, 0.4, 0.4]])
    assert contrast_outcomes(scores).tolist() == [True, False, False, False]
    # ARO's Order sets: argmax over [true, perturbations] picks the first of equal scores, the true caption
    assert contrast_outcomes(scores, ties_win=True).tolist() == [True, True, False, True]


def test_macro_average_by_hand_and_its_interval() -> None:
    outcomes = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    groups = ["a", "a", "b", "c", "c", "c"]  # a: 50 %, b: 100 %, c: 33.3 %
    metric = macro_percent_metric(outcomes, groups)
    assert metric.value == pytest.approx((50 + 100 + 100 / 3) / 3)
    assert metric.n == 6 and metric.ci_low is not None and metric.ci_high is not None
    assert metric.ci_low <= metric.value <= metric.ci_high and metric.ci_high - metric.ci_low > 10
    constant = macro_percent_metric([1.0, 1.0, 1.0], ["x", "y", "y"])
    assert (constant.value, constant.ci_low, constant.ci_high) == (100.0, 100.0, 100.0)
    assert macro_groups(groups, excluded=["b"]) == [True, True, False, True, True, True]
    assert macro_groups(groups, min_count=3) == [False, False, False, True, True, True]


def test_benchmarks_turn_scores_into_metrics_for_every_scorer() -> None:
    from albef.data.formats_compositional import ContrastExample

    examples = [ContrastExample(str(i), "x.png", ("good", "bad"), g) for i, g in enumerate("aabb")]
    bench = ContrastBenchmark(examples, "subset")
    itc = torch.tensor([[2.0, 1.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])  # right, wrong, tie (wrong), right
    measured = bench.measure({"itc": itc, "itm": -itc})
    assert measured.metrics["itc/accuracy"].value == 50.0 and measured.metrics["itm/accuracy"].value == 25.0
    assert measured.metrics["itc/macro_accuracy"].value == pytest.approx(50.0)  # a: 50, b: 50
    assert measured.metrics["itc/a"].group == "itc by subset" and measured.metrics["itm/b"].value == 0.0
    assert measured.chance["itc/accuracy"] == 50.0
    assert measured.samples[2] == {
        "id": "2", "image": "x.png", "subset": "b", "captions": ["good", "bad"], "itc": [1.0, 1.0],
        "itm": [-1.0, -1.0],
    }  # fmt: skip
    table = side_by_side(measured.metrics)
    assert table["headers"] == ["metric", "ITC", "ITM", "ITM + ITC"]
    assert table["rows"][0][:3] == [
        "accuracy",
        "50.0 ± " + table["rows"][0][1].split("± ")[1],
        table["rows"][0][2],
    ]
    assert table["rows"][0][3] == "-"  # no ITM + ITC scores were given
    with pytest.raises(ValueError, match="same number of captions"):
        ContrastBenchmark([*examples, ContrastExample("9", "x.png", ("a", "b", "c"), "a")], "subset")


def test_winoground_benchmark_pairs_are_caption_major() -> None:
    from albef.data.formats_compositional import WinogroundExample

    bench = WinogroundBenchmark([WinogroundExample("0", ("i0.png", "i1.png"), ("c0", "c1"), "t", "Object")])
    assert bench.pairs() == [[(("i0.png", None), "c0"), (("i1.png", None), "c0"), (("i0.png", None), "c1"),
                              (("i1.png", None), "c1")]]  # fmt: skip
    measured = bench.measure({"itm": torch.tensor([[0.9, 0.1, 0.2, 0.8]])})
    assert measured.metrics["itm/group_score"].value == 100.0
    assert measured.metrics["itm/Object/group_score"].group == "itm by tag"
    assert measured.chance["itm/group_score"] == pytest.approx(100 / 6)


# -- readers --------------------------------------------------------------------------------------------------
def _lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_winoground_reader_reads_the_release_layout(tmp_path: Path) -> None:
    record = {"id": 0, "caption_0": "an old person kisses a young person", "caption_1": "a young person kisses an old person",
              "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "tag": "Noun", "secondary_tag": "",
              "num_main_preds": 1, "collapsed_tag": "Object"}  # fmt: skip
    (example,) = read_winoground(_lines(tmp_path / "examples.jsonl", [record]))
    assert example.images == ("ex_0_img_0.png", "ex_0_img_1.png") and example.collapsed_tag == "Object"
    assert example.captions[1] == "a young person kisses an old person"
    broken = dict(record, caption_1="  ")
    with pytest.raises(DataError, match=r"examples\.jsonl.*caption_1.*empty"):
        read_winoground(_lines(tmp_path / "examples.jsonl", [record, broken]))


def test_sugarcrepe_reader_and_the_ent_spelling(tmp_path: Path) -> None:
    data = {"0": {"filename": "000000001.jpg", "caption": "a dog on a sofa", "negative_caption": "a cat on a sofa"},
            "7": {"filename": "000000002.jpg", "caption": "two men", "negative_caption": "three men"}}  # fmt: skip
    (tmp_path / "swap_ent.json").write_text(json.dumps(data))
    path = sugarcrepe_file(tmp_path, "swap_obj")
    assert path.name == "swap_ent.json"
    examples = read_sugarcrepe(path, "swap_obj")
    assert [(e.id, e.image, e.captions, e.group) for e in examples] == [
        ("0", "000000001.jpg", ("a dog on a sofa", "a cat on a sofa"), "swap_obj"),
        ("7", "000000002.jpg", ("two men", "three men"), "swap_obj"),
    ]
    with pytest.raises(DataError, match="missing"):
        sugarcrepe_file(tmp_path, "add_att")
    del data["7"]["negative_caption"]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad\.json.*negative_caption.*missing"):
        read_sugarcrepe(tmp_path / "bad.json", "x")


def test_aro_readers_group_by_relation_or_attribute_pair_and_keep_the_box(tmp_path: Path) -> None:
    base = {"image_id": "2380", "image_path": "2380.jpg", "bbox_x": 10, "bbox_y": 20.5, "bbox_w": 30, "bbox_h": 40,
            "true_caption": "the horse is eating the grass", "false_caption": "the grass is eating the horse"}  # fmt: skip
    rel = tmp_path / "visual_genome_relation.json"
    rel.write_text(json.dumps([dict(base, relation_name="eating")]))
    (ex,) = read_aro_vg(rel, "vg_relation")
    assert (ex.group, ex.box, ex.captions[0]) == ("eating", (10.0, 20.5, 30.0, 40.0), base["true_caption"])
    att = tmp_path / "visual_genome_attribution.json"
    att.write_text(json.dumps([dict(base, attributes=["white", "black"])]))
    assert read_aro_vg(att, "vg_attribution")[0].group == "white_black"
    att.write_text(json.dumps([dict(base, attributes=["white", "black"], bbox_w=0)]))
    with pytest.raises(DataError, match=r"record 0.*bbox_w.*positive size"):
        read_aro_vg(att, "vg_attribution")
    caps = tmp_path / "coco_test.json"
    caps.write_text(
        json.dumps(
            [{"image": "val2014/a.jpg", "caption": ["one", "two"]}, {"image": "b.jpg", "caption": "x"}]
        )
    )
    assert read_caption_images(caps) == [("val2014/a.jpg", ("one", "two")), ("b.jpg", ("x",))]


# -- word order -------------------------------------------------------------------------------------------------
TAGS = {"a": "DT", "white": "JJ", "dog": "NN", "chases": "VBZ", "the": "DT", "red": "JJ", "ball": "NN",
        "on": "IN", "green": "JJ", "grass": "NN", ".": "."}  # fmt: skip


def tagger(text: str) -> list[tuple[str, str]]:
    return [(w, TAGS[w]) for w in text.replace(".", " .").split()]


def _is_reordering_of(tokens: list[str], groups: list[list[str]]) -> bool:
    """Whether ``tokens`` is the concatenation of ``groups`` (each used once) in some order."""
    if not groups:
        return not tokens
    return any(
        tokens[: len(g)] == g and _is_reordering_of(tokens[len(g) :], groups[:i] + groups[i + 1 :])
        for i, g in enumerate(groups)
    )


def test_perturbations_move_only_the_words_they_should() -> None:
    caption = "a white dog chases the red ball on green grass ."
    words = caption.split()
    rng = random.Random(3)
    nouns = perturb(caption, "shuffle_nouns_and_adj", rng, tagger).split()
    fixed = [i for i, w in enumerate(words) if TAGS[w] not in ("NN", "JJ")]
    assert [nouns[i] for i in fixed] == [words[i] for i in fixed]  # only nouns and adjectives move
    assert Counter(nouns[i] for i, w in enumerate(words) if TAGS[w] == "NN") == Counter(
        ["dog", "ball", "grass"]
    )
    others = perturb(caption, "shuffle_allbut_nouns_and_adj", random.Random(3), tagger).split()
    kept = [i for i, w in enumerate(words) if TAGS[w] in ("NN", "JJ")]
    assert [others[i] for i in kept] == [words[i] for i in kept] and Counter(others) == Counter(words)
    within = perturb(caption, "shuffle_within_trigrams", random.Random(1)).split()
    assert [Counter(g) for g in trigrams(within)] == [Counter(g) for g in trigrams(words)]
    moved = perturb(caption, "shuffle_trigrams", random.Random(1)).split()
    assert moved != words and _is_reordering_of(moved, trigrams(words))
    with pytest.raises(ValueError, match="tagger"):
        perturb(caption, "shuffle_nouns_and_adj", rng)


def test_order_examples_put_the_caption_first_and_repeat_exactly() -> None:
    images = [("a.jpg", ("a white dog chases the red ball.", "a red ball on green grass."))]
    first = order_examples(images, tagger, seed=0)
    assert len(first) == 2 and all(len(ex.captions) == 1 + len(PERTURBATIONS) for ex in first)
    assert first[0].captions[0] == "a white dog chases the red ball" and first[0].image == "a.jpg"
    assert order_examples(images, tagger, seed=0) == first
    assert order_examples(images, tagger, seed=1) != first


def test_the_order_sets_without_spacy_stop_with_the_install_command() -> None:
    import importlib.util

    from albef.data.word_order import spacy_tagger
    from albef.errors import ConfigError

    if importlib.util.find_spec("spacy") is not None:
        pytest.skip("spaCy is installed here")
    with pytest.raises(ConfigError, match="python -m spacy download en_core_web_sm"):
        spacy_tagger()
