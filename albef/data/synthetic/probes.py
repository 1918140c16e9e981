"""Compositional probes in the Winoground and SugarCrepe file formats, on scenes no training file shows.

Every probe caption is built with its logical form (:mod:`albef.data.synthetic.logic`), and a probe is kept only
when the forms say what the benchmark assumes: a true caption holds of its image, a negative does not.

- **Winoground style** (``probes/winoground/examples.jsonl``, images ``images/probes/winoground/``): two captions
  made of the same words and two images, each caption true of one image only. ``swap-att`` swaps the colours of
  two related objects ("a red circle above a blue star" / "a blue circle above a red star"; the second image is
  the first with those two colours swapped; ``collapsed_tag`` ``Object``); ``swap-rel`` swaps the two objects of
  a relation ("a red circle above a blue star" / "a blue star above a red circle"; the second image swaps their
  cells; ``Relation``).
- **SugarCrepe style** (``probes/sugarcrepe/<subset>.json``, images ``images/probes/sugarcrepe/``): one image, a
  true caption about two related objects and a hard negative per subset: ``replace_obj`` (a shape),
  ``replace_att`` (a colour), ``replace_rel`` (the opposite relation), ``swap_obj`` (the two objects),
  ``swap_att`` (their colours), ``add_obj`` (an absent object joined on), ``add_att`` (a wrong colour added to a
  bare shape) and ``replace_count`` ("two stars" -> "three stars", not a SugarCrepe subset).

The world also writes ``pretrain_negatives.json``: the same kinds of (true caption, false caption) pairs about
every pretraining image, which ``data.itm_text_negatives`` turns into extra ITM positives and negatives. Paired,
the two captions share their wording (only the binding, the relation or a word differs), so ITM can only tell
them apart by looking; most false captions alone (world v4) had one sentence form that few true captions
have, so rejecting the form was rewarded. ``pretrain_binding_pairs.json`` (world v6) holds only the kinds that
binding decides (``replace_rel``, ``swap_obj``, ``swap_att``), six draws of each per pretraining image: the
pairs of the quickstart's second pretraining stage, in which ITM alone trains (preset
``synthetic_pretrain_itm``).

No probe text joins the tokenizer's corpus (every word is already a word of the world's captions), so the other
files of the world are unchanged.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from albef.data.synthetic.language import NUMBER_WORDS, RELATION_PHRASES
from albef.data.synthetic.logic import CountIs, Exists, Form, Related
from albef.data.synthetic.plan import Plan
from albef.data.synthetic.scene import (
    COLORS,
    RELATIONS,
    SHAPES,
    Desc,
    Scene,
    SceneObject,
    related,
    sample_scene,
)
from albef.data.synthetic.sizes import SizeSpec

FOLDER = "probes"
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
SUBSETS = (
    "replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att", "replace_count",
)  # fmt: skip


def _full(obj: SceneObject) -> Desc:
    return Desc(shape=obj.shape, color=obj.color)


def _related_text(a: Desc, relation: str, b: Desc) -> str:
    return f"{a.indefinite()} {RELATION_PHRASES[relation]} {b.indefinite()}"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _related_pair(scene: Scene, rng: random.Random) -> tuple[SceneObject, str, SceneObject] | None:
    """Two objects of different shapes and colours and a relation between them, chosen at random."""
    facts = [
        (x, rel, y)
        for x in scene.objects
        for y in scene.objects
        for rel in RELATIONS
        if x is not y and x.shape != y.shape and x.color != y.color and related(x, rel, y)
    ]
    return rng.choice(facts) if facts else None


def _swap(scene: Scene, x: SceneObject, y: SceneObject, what: str) -> Scene:
    """``scene`` with ``x`` and ``y`` trading their colours (``what="color"``) or their cells (``"cell"``)."""
    if what == "color":
        nx, ny = replace(x, color=y.color), replace(y, color=x.color)
    else:
        nx = replace(x, row=y.row, col=y.col, dx=y.dx, dy=y.dy)
        ny = replace(y, row=x.row, col=x.col, dx=x.dx, dy=x.dy)
    objects = tuple(nx if o is x else ny if o is y else o for o in scene.objects)
    return Scene(tuple(sorted(objects, key=lambda o: (o.row, o.col))), scene.background)


def winoground_example(rng: random.Random, kind: str) -> tuple[list[str], list[Scene]] | None:
    """Captions and scenes of one ``swap-att`` or ``swap-rel`` example, or ``None`` when a draw does not work."""
    scene = sample_scene(rng, min_objects=2, max_objects=4)
    fact = _related_pair(scene, rng)
    if fact is None:
        return None
    x, rel, y = fact
    if kind == "swap-att":
        forms: list[Form] = [
            Related(_full(x), rel, _full(y)),
            Related(Desc(shape=x.shape, color=y.color), rel, Desc(shape=y.shape, color=x.color)),
        ]
        other = _swap(scene, x, y, "color")
    else:
        forms = [Related(_full(x), rel, _full(y)), Related(_full(y), rel, _full(x))]
        other = _swap(scene, x, y, "cell")
    scenes = [scene, other]
    if not all(form.holds(scenes[i]) and not form.holds(scenes[1 - i]) for i, form in enumerate(forms)):
        return None
    texts = [_sentence(_related_text(f.a, f.relation, f.b)) for f in forms if isinstance(f, Related)]
    return texts, scenes


def _other(values: tuple[str, ...], *avoid: str, rng: random.Random) -> str:
    return rng.choice([v for v in values if v not in avoid])


def _count_negative(scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    obj = rng.choice(scene.objects)
    desc = Desc(shape=obj.shape)
    n = desc.count(scene)
    wrong = n + rng.choice((-1, 1)) if n > 1 else n + 1
    texts = []
    for k in (n, wrong):
        texts.append(
            f"there is only one {desc.words()}" if k == 1 else f"there are {NUMBER_WORDS[k]} {desc.plural()}"
        )
    if CountIs(desc, wrong).holds(scene):
        return None
    return _sentence(texts[0]), _sentence(texts[1])


def sugarcrepe_negative(scene: Scene, subset: str, rng: random.Random) -> tuple[str, str] | None:
    """``(true caption, hard negative)`` of ``subset`` about ``scene``, or ``None`` when none can be made."""
    if subset == "replace_count":
        return _count_negative(scene, rng)
    fact = _related_pair(scene, rng)
    if fact is None:
        return None
    x, rel, y = fact
    a, b = _full(x), _full(y)
    positive: Form = Related(a, rel, b)
    text = _related_text(a, rel, b)
    negative: Form
    if subset == "replace_obj":
        negative = Related(a, rel, Desc(shape=_other(SHAPES, y.shape, x.shape, rng=rng), color=y.color))
    elif subset == "replace_att":
        negative = Related(a, rel, Desc(shape=y.shape, color=_other(COLORS, y.color, x.color, rng=rng)))
    elif subset == "replace_rel":
        negative = Related(a, OPPOSITE[rel], b)
    elif subset == "swap_obj":
        negative = Related(b, rel, a)
    elif subset == "swap_att":
        negative = Related(Desc(shape=x.shape, color=y.color), rel, Desc(shape=y.shape, color=x.color))
    elif subset == "add_att":
        positive = Related(a, rel, Desc(shape=y.shape))
        text = _related_text(a, rel, Desc(shape=y.shape))
        negative = Related(a, rel, Desc(shape=y.shape, color=_other(COLORS, y.color, rng=rng)))
    elif subset == "add_obj":
        absent = [
            Desc(shape=s, color=c)
            for s in SHAPES
            for c in COLORS
            if not Exists(Desc(shape=s, color=c)).holds(scene)
        ]
        extra = rng.choice(absent)
        if not positive.holds(scene) or Exists(extra).holds(scene):
            return None
        return _sentence(text), _sentence(f"{text} and {extra.indefinite()}")
    else:
        raise ValueError(f"unknown probe subset {subset!r}")
    if not positive.holds(scene) or negative.holds(scene):
        return None
    assert isinstance(negative, Related)
    return _sentence(text), _sentence(_related_text(negative.a, negative.relation, negative.b))


def _training_pairs(
    plan: Plan, stream: str, subsets: tuple[str, ...], draws: int
) -> dict[str, list[dict[str, str]]]:
    """For every pretraining image, ``draws`` rounds of one pair of each of ``subsets`` that its scene allows
    (the probes' constructions, on the training scenes), as ``{image: [{"caption", "negative"}, ...]}``: one
    item per distinct false caption, in the order of its first draw; a false caption drawn again from another
    true caption (the reversed relation of one is the object swap of another) keeps its last true caption."""
    rng = plan.stream(stream)
    pairs: dict[str, list[dict[str, str]]] = {}
    for image in plan.images:
        if not image.path.startswith("images/pretrain/"):
            continue
        made: dict[str, str] = {}
        for _ in range(draws):
            for subset in subsets:
                pair = sugarcrepe_negative(image.scene, subset, rng)
                if pair is not None:
                    made[pair[1]] = pair[0]
        if made:
            pairs[image.path] = [{"caption": true, "negative": false} for false, true in made.items()]
    return pairs


def build_pretrain_negatives(plan: Plan) -> None:
    """``pretrain_negatives.json``: one pair of each probe subset per pretraining image, for the extra ITM pairs
    of ``data.itm_text_negatives`` (:func:`_training_pairs`)."""
    plan.files["pretrain_negatives.json"] = _training_pairs(plan, "pretrain_negatives", SUBSETS, 1)


BINDING_SUBSETS = ("replace_rel", "swap_obj", "swap_att")
"""The pair kinds that only where things stand decides (``pretrain_binding_pairs.json``)."""
BINDING_DRAWS = 6


def build_binding_pairs(plan: Plan) -> None:
    """``pretrain_binding_pairs.json``: :data:`BINDING_DRAWS` rounds of a pair of each of
    :data:`BINDING_SUBSETS` per pretraining image (:func:`_training_pairs`), for the ITM-only second
    pretraining stage."""
    plan.files["pretrain_binding_pairs.json"] = _training_pairs(
        plan, "pretrain_binding_pairs", BINDING_SUBSETS, BINDING_DRAWS
    )


def build_probes(plan: Plan, spec: SizeSpec) -> None:
    """The probe files (module docstring): ``spec.probe_sizes`` = (Winoground examples per kind, SugarCrepe
    images)."""
    per_kind, images = spec.probe_sizes
    if not per_kind and not images:
        return
    rng = plan.stream("probes_winoground")
    examples: list[dict[str, Any]] = []
    for kind, collapsed in (("swap-att", "Object"), ("swap-rel", "Relation")):
        made = 0
        while made < per_kind:
            drawn = winoground_example(rng, kind)
            if drawn is None:
                continue
            texts, scenes = drawn
            i = len(examples)
            for j, scene in enumerate(scenes):
                plan.add_image(f"{FOLDER}/winoground", scene, stem=f"ex_{i}_img_{j}")
            examples.append(
                {
                    "id": i, "caption_0": texts[0], "caption_1": texts[1], "image_0": f"ex_{i}_img_0",
                    "image_1": f"ex_{i}_img_1", "tag": kind, "secondary_tag": "", "num_main_preds": 1,
                    "collapsed_tag": collapsed,
                }
            )  # fmt: skip
            made += 1
    plan.files[f"{FOLDER}/winoground/examples.jsonl"] = examples
    rng = plan.stream("probes_sugarcrepe")
    subsets: dict[str, dict[str, dict[str, str]]] = {s: {} for s in SUBSETS}
    for _ in range(images):
        scene = sample_scene(rng, min_objects=2, max_objects=4)
        image = plan.add_image(f"{FOLDER}/sugarcrepe", scene)
        name = image.path.rsplit("/", 1)[1]
        for subset in SUBSETS:
            made_pair = sugarcrepe_negative(scene, subset, rng)
            if made_pair is not None:
                key = str(len(subsets[subset]))
                subsets[subset][key] = {
                    "filename": name,
                    "caption": made_pair[0],
                    "negative_caption": made_pair[1],
                }
    for subset, content in subsets.items():
        plan.files[f"{FOLDER}/sugarcrepe/{subset}.json"] = content
    plan.splits["probes"] = {
        "winoground_examples": len(examples),
        **{f"sugarcrepe_{s}": len(c) for s, c in subsets.items()},
    }
