"""Captions: true sentences about a scene, built from clauses of several structures.

Every caption carries its logical form (:mod:`albef.data.synthetic.logic`), so it is true of its scene by
construction and can be checked against any other scene. :func:`unique_caption` adds clauses until no
other scene of a pool satisfies the caption, which makes retrieval ground truth unambiguous.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from albef.data.synthetic.logic import And, CountIs, Exists, Form, Listing, Related
from albef.data.synthetic.scene import RELATIONS, Desc, Scene, SceneObject, related

NUMBER_WORDS: tuple[str, ...] = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight")
MAX_CAPTION_WORDS = 22
"""Longer captions are avoided so that ALBEF's truncation (30 words, 30 tokens) never cuts one."""
RELATION_PHRASES: dict[str, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}


@dataclass(frozen=True)
class Clause:
    """A fragment of a caption and its meaning; ``plural`` selects "there is" versus "there are"."""

    text: str
    form: Form
    plural: bool = False


@dataclass(frozen=True)
class Caption:
    """A finished caption and its meaning (an :class:`~albef.data.synthetic.logic.And` of clauses)."""

    text: str
    form: Form


def describe(obj: SceneObject, rng: random.Random, detail: str) -> Desc:
    """A description of ``obj`` at a level of detail.

    Args:
        obj: The object to describe (the description always matches it).
        rng: Random stream.
        detail: ``"low"`` (shape or colour alone), ``"mid"`` (colour and shape, sometimes size) or
            ``"high"`` (size, colour and shape).

    Returns:
        A :class:`Desc` matching ``obj``.
    """
    if detail == "low":
        return Desc(shape=obj.shape) if rng.random() < 0.6 else Desc(color=obj.color)
    if detail == "mid":
        size = obj.size if rng.random() < 0.3 else None
        return Desc(shape=obj.shape, color=obj.color, size=size)
    return Desc(shape=obj.shape, color=obj.color, size=obj.size)


def _detail(rng: random.Random, specific: bool) -> str:
    weights = (0.0, 0.5, 0.5) if specific else (0.25, 0.55, 0.2)
    return rng.choices(("low", "mid", "high"), weights)[0]


def exists_clause(scene: Scene, rng: random.Random, specific: bool = False) -> Clause:
    """Clause "a red circle": some object of the scene, described."""
    desc = describe(rng.choice(scene.objects), rng, _detail(rng, specific))
    return Clause(desc.indefinite(), Exists(desc))


def relation_clause(scene: Scene, rng: random.Random, specific: bool = False) -> Clause | None:
    """Clause "a red circle to the left of a blue square", or ``None`` if no two objects are related."""
    facts = [
        (x, rel, y)
        for x in scene.objects
        for y in scene.objects
        for rel in RELATIONS
        if x is not y and related(x, rel, y)
    ]
    if not facts:
        return None
    x, rel, y = rng.choice(facts)
    a, b = describe(x, rng, _detail(rng, specific)), describe(y, rng, _detail(rng, specific))
    return Clause(f"{a.indefinite()} {RELATION_PHRASES[rel]} {b.indefinite()}", Related(a, rel, b))


def count_clause(scene: Scene, rng: random.Random, specific: bool = False) -> Clause:
    """Clause "two circles", "three objects" or "only one red object": an exact count of a kind of object."""
    obj = rng.choice(scene.objects)
    options = [Desc(shape=obj.shape), Desc(color=obj.color), Desc()]
    if specific:
        options = [Desc(shape=obj.shape, color=obj.color), Desc(shape=obj.shape), Desc()]
    desc = rng.choice(options)
    n = desc.count(scene)
    if n == 1:
        return Clause(f"only one {desc.words()}", CountIs(desc, 1))
    return Clause(f"{NUMBER_WORDS[n]} {desc.plural()}", CountIs(desc, n), plural=True)


def listing_caption(scene: Scene, rng: random.Random, detail: str = "mid") -> Caption:
    """Caption "three objects: a red circle, a small blue square and a green star" (every object, in
    random order); with ``detail="high"`` this names the scene's full object multiset."""
    objects = list(scene.objects)
    rng.shuffle(objects)
    descs = tuple(describe(o, rng, detail) for o in objects)
    names = [d.indefinite() for d in descs]
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    n = NUMBER_WORDS[len(descs)]
    frame = rng.choice(("{n} objects: {items}", "an image of {n} objects: {items}", "{items}, nothing else"))
    return Caption(_sentence(frame.format(n=n, items=listed)), Listing(descs))


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _open(clause: Clause, rng: random.Random) -> str:
    if clause.text.startswith("only one"):
        frames: tuple[str, ...] = ("there is {c}", "an image with {c}")
    elif clause.plural:
        frames = ("{c}", "there are {c}", "a picture of {c}", "an image with {c}")
    else:
        frames = (
            "{c}",
            "there is {c}",
            "a picture of {c}",
            "an image with {c}",
            "{c} on a textured background",
        )
    return rng.choice(frames).format(c=clause.text)


def _join(clause: Clause, rng: random.Random) -> str:
    there = "there are" if clause.plural else "there is"
    return rng.choice(
        (f", and {there} {clause.text}", f" with {clause.text}", f"; {there} also {clause.text}")
    )


def compose(clauses: Sequence[Clause], rng: random.Random) -> Caption:
    """Join clauses into one sentence whose form is the conjunction of theirs."""
    text = _open(clauses[0], rng) + "".join(_join(c, rng) for c in clauses[1:])
    return Caption(_sentence(text), And(tuple(c.form for c in clauses)))


ClauseMaker = Callable[[Scene, random.Random, bool], "Clause | None"]
_MAKERS: tuple[ClauseMaker, ...] = (exists_clause, relation_clause, count_clause)


def _clause(scene: Scene, rng: random.Random, specific: bool, weights: Sequence[float]) -> Clause:
    while True:
        made = rng.choices(_MAKERS, weights)[0](scene, rng, specific)
        if made is not None:
            return made


def random_caption(scene: Scene, rng: random.Random) -> Caption:
    """A true caption of varied structure with one or two clauses (pretraining and training captions)."""
    if rng.random() < 0.15:
        return listing_caption(scene, rng, _detail(rng, specific=False))
    clauses = [_clause(scene, rng, False, (0.35, 0.45, 0.2))]
    if rng.random() < 0.4:
        extra = _clause(scene, rng, False, (0.5, 0.3, 0.2))
        if extra.form != clauses[0].form and extra.text not in clauses[0].text:
            clauses.append(extra)
    caption = compose(clauses, rng)
    return caption if _fits(caption) else compose(clauses[:1], rng)


def _fits(caption: Caption) -> bool:
    return len(caption.text.split()) <= MAX_CAPTION_WORDS


def unique_caption(
    scene: Scene, others: Sequence[Scene], rng: random.Random, avoid: set[str], max_clauses: int = 3
) -> Caption:
    """A true caption of ``scene`` that no scene of ``others`` satisfies and whose text is not in ``avoid``.

    Clauses are added until no other scene survives; after a few failed tries the caption falls back to a
    complete listing at full detail, which is unique when the pool's scenes have distinct signatures
    (:func:`~albef.data.synthetic.scene.sample_distinct_scenes`).

    Raises:
        ValueError: If even the full listing is satisfied by another scene (the pool is not distinct).
    """
    for _ in range(12):
        if rng.random() < 0.15:
            caption = listing_caption(scene, rng, "high")
            if caption.text not in avoid and not any(caption.form.holds(s) for s in others):
                return caption
            continue
        clauses = [_clause(scene, rng, True, (0.3, 0.55, 0.15))]
        survivors = [s for s in others if clauses[0].form.holds(s)]
        for _ in range(4 * max_clauses):
            if not survivors or len(clauses) == max_clauses:
                break
            extra = _clause(scene, rng, True, (0.5, 0.35, 0.15))
            if all(extra.form != c.form and extra.text not in c.text for c in clauses):
                clauses.append(extra)
                survivors = [s for s in survivors if extra.form.holds(s)]
        caption = compose(clauses, rng)
        if not survivors and caption.text not in avoid and _fits(caption):
            return caption
    for _ in range(24):
        caption = listing_caption(scene, rng, "high")
        if caption.text not in avoid:
            break
    if any(caption.form.holds(s) for s in others):
        raise ValueError("scene pool is not distinct: a full listing also describes another scene")
    return caption
