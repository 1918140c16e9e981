"""NLVR²-style statements about image pairs and SNLI-VE-style hypotheses about one image.

Statements are drawn first; the pairs they are judged against are then sampled until the statement's form
gives the wanted label, so labels are balanced and true by construction.

SNLI-VE labels come from two parts of a hypothesis: a *visual* form that the image decides, and an optional
*unobservable* property (material, weight, temperature, motion, age...) that no image can show. The label is
``contradiction`` if the visual form is false, else ``neutral`` if an unobservable property is asserted, else
``entailment``. Neutral is learnable but grounded: "There is a red star that is made of wood." is neutral
when the image has a red star and a contradiction when it has none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from albef.data.synthetic.language import (
    NUMBER_WORDS,
    RELATION_PHRASES,
    count_clause,
    describe,
    relation_clause,
)
from albef.data.synthetic.logic import (
    Both,
    CountIs,
    ExactlyOne,
    Exists,
    Form,
    MoreOn,
    Neither,
    Not,
    OnSide,
    PairForm,
    Related,
    TotalIs,
)
from albef.data.synthetic.scene import COLORS, RELATIONS, SHAPES, Desc, Scene, article, sample_scene

STATEMENT_KINDS: tuple[str, ...] = ("count", "exists", "both", "one", "neither", "more", "total", "relation")
STATEMENT_WEIGHTS: tuple[float, ...] = (0.1, 0.3, 0.2, 0.1, 0.15, 0.05, 0.03, 0.07)
"""How often each kind is drawn. Most statements ask whether a kind of object is in one image, in both or
in neither, which a model grounded by pretraining and text assignment learns from the world's few thousand
pairs; counts, comparisons, totals and relations, which need far more data, are rarer. (With the eight kinds
equally likely, a CPU-sized model stayed at chance.)"""

UNOBSERVABLE: tuple[tuple[str, str], ...] = (
    ("made of wood", "wooden"),
    ("made of glass", "glass"),
    ("made of metal", "metal"),
    ("heavy", "heavy"),
    ("hot", "hot"),
    ("cold", "cold"),
    ("spinning", "spinning"),
    ("brand new", "brand new"),
    ("very old", "old"),
    ("hollow", "hollow"),
    ("expensive", "expensive"),
    ("magnetic", "magnetic"),
)
"""(predicate, adjective) pairs for properties a rendered shape cannot show."""


@dataclass(frozen=True)
class Statement:
    """An NLVR² sentence about (left, right) images, its meaning, and what the pair sampler should favour."""

    text: str
    form: PairForm
    focus: tuple[Desc, ...]
    synset: str


def _random_desc(rng: random.Random) -> Desc:
    roll = rng.random()
    if roll < 0.4:
        return Desc(shape=rng.choice(SHAPES))
    if roll < 0.7:
        return Desc(color=rng.choice(COLORS))
    return Desc(shape=rng.choice(SHAPES), color=rng.choice(COLORS))


def _count_phrase(desc: Desc, n: int) -> str:
    return f"exactly one {desc.words()}" if n == 1 else f"exactly {NUMBER_WORDS[n]} {desc.plural()}"


def _side_statement(kind: str, desc: Desc, side: str, rng: random.Random) -> tuple[str, PairForm]:
    if kind == "count":
        n = rng.randint(1, 3)
        phrase = _count_phrase(desc, n)
        text = rng.choice(
            (f"The {side} image contains {phrase}.", f"There are {phrase} in the {side} image.")
        )
        if n == 1:
            text = text.replace("There are", "There is")
        return text, OnSide(side, CountIs(desc, n))
    if kind == "exists":
        text = rng.choice(
            (
                f"The {side} image contains {desc.indefinite()}.",
                f"There is {desc.indefinite()} in the {side} image.",
            )
        )
        return text, OnSide(side, Exists(desc))
    other = "left" if side == "right" else "right"
    text = rng.choice(
        (
            f"There are more {desc.plural()} in the {side} image than in the {other} image.",
            f"The {side} image has more {desc.plural()} than the {other} image.",
        )
    )
    return text, MoreOn(side, desc)


def _both_statement(kind: str, desc: Desc, rng: random.Random) -> tuple[str, PairForm]:
    if kind == "both":
        text = rng.choice(
            (f"Both images contain {desc.indefinite()}.", f"Each image has at least one {desc.words()}.")
        )
        return text, Both(Exists(desc))
    if kind == "one":
        text = rng.choice(
            (
                f"Exactly one image contains {desc.indefinite()}.",
                f"Only one of the images has {desc.indefinite()}.",
            )
        )
        return text, ExactlyOne(Exists(desc))
    if kind == "neither":
        text = rng.choice(
            (f"Neither image contains {desc.indefinite()}.", f"There are no {desc.plural()} in either image.")
        )
        return text, Neither(Exists(desc))
    n = rng.randint(2, 5)
    text = rng.choice(
        (
            f"There are exactly {NUMBER_WORDS[n]} {desc.plural()} in total.",
            f"The two images contain {NUMBER_WORDS[n]} {desc.plural()} in total.",
        )
    )
    return text, TotalIs(desc, n)


def random_statement(rng: random.Random) -> Statement:
    """A statement of a random kind (:data:`STATEMENT_KINDS`) about a random kind of object."""
    kind = rng.choices(STATEMENT_KINDS, STATEMENT_WEIGHTS)[0]
    side = rng.choice(("left", "right"))
    desc = _random_desc(rng)
    if kind == "more" and rng.random() < 0.25:
        desc = Desc()
    if kind == "relation":
        a, b, rel = _random_desc(rng), _random_desc(rng), rng.choice(RELATIONS)
        text = f"In the {side} image, {a.indefinite()} is {RELATION_PHRASES[rel]} {b.indefinite()}."
        synset = a.shape or a.color or "object"
        return Statement(text, OnSide(side, Related(a, rel, b)), (a, b), synset)
    if kind in ("count", "exists", "more"):
        text, form = _side_statement(kind, desc, side, rng)
    else:
        text, form = _both_statement(kind, desc, rng)
    return Statement(text, form, (desc,) if desc != Desc() else (), desc.shape or desc.color or "object")


def sample_pair(
    statement: Statement, want: bool, rng: random.Random, tries: int = 200
) -> tuple[Scene, Scene] | None:
    """Two scenes for which ``statement`` has truth value ``want``, or ``None`` after ``tries`` attempts.

    Each attempt favours the statement's objects with a random strength per image, so that both rare
    (present) and common (absent) outcomes are reachable.
    """
    for _ in range(tries):
        left = sample_scene(rng, focus=statement.focus, focus_prob=rng.choice((0.0, 0.35, 0.7)))
        right = sample_scene(rng, focus=statement.focus, focus_prob=rng.choice((0.0, 0.35, 0.7)))
        if statement.form.holds(left, right) == want:
            return left, right
    return None


# ------------------------------------------------------------------------------------------------ SNLI-VE


@dataclass(frozen=True)
class Hypothesis:
    """An SNLI-VE hypothesis: its text, the visual part of its meaning and whether it adds an unobservable
    property. The label is derived from these (:meth:`label`)."""

    text: str
    visual: Form
    unobservable: bool

    def label(self, scene: Scene) -> str:
        """``entailment``, ``neutral`` or ``contradiction`` of this hypothesis given ``scene``."""
        if not self.visual.holds(scene):
            return "contradiction"
        return "neutral" if self.unobservable else "entailment"


def _true_visual(scene: Scene, rng: random.Random) -> Hypothesis:
    roll = rng.random()
    if roll < 0.4:
        desc = describe(rng.choice(scene.objects), rng, rng.choice(("low", "mid", "high")))
        return Hypothesis(f"There is {desc.indefinite()}.", Exists(desc), False)
    clause = relation_clause(scene, rng) if roll < 0.75 else None
    if clause is None:
        clause = count_clause(scene, rng)
        there = "There are" if clause.plural else "There is"
        return Hypothesis(f"{there} {clause.text}.", clause.form, False)
    return Hypothesis(f"There is {clause.text}.", clause.form, False)


def _false_visual(scene: Scene, rng: random.Random) -> Hypothesis:
    for _ in range(50):
        roll = rng.random()
        if roll < 0.45:
            desc = Desc(shape=rng.choice(SHAPES), color=rng.choice(COLORS))
            hyp = Hypothesis(f"There is {desc.indefinite()}.", Exists(desc), False)
        elif roll < 0.75:
            a, b = Desc(shape=rng.choice(SHAPES)), Desc(shape=rng.choice(SHAPES))
            rel = rng.choice(RELATIONS)
            text = f"There is {a.indefinite()} {RELATION_PHRASES[rel]} {b.indefinite()}."
            hyp = Hypothesis(text, Related(a, rel, b), False)
        else:
            desc = Desc(shape=rng.choice(scene.objects).shape)
            n = max(1, desc.count(scene) + rng.choice((-1, 1, 2)))
            there = "There is" if n == 1 else "There are"
            hyp = Hypothesis(f"{there} {_count_phrase(desc, n)}.", CountIs(desc, n), False)
        if not hyp.visual.holds(scene):
            return hyp
    desc = Desc(shape=scene.objects[0].shape)
    return Hypothesis(f"There are no {desc.plural()}.", Not(Exists(desc)), False)


def _unobservable(desc: Desc, rng: random.Random) -> Hypothesis:
    predicate, adjective = rng.choice(UNOBSERVABLE)
    if rng.random() < 0.5:
        text = f"There is {desc.indefinite()} that is {predicate}."
    else:
        text = f"The image shows {article(adjective + ' ' + desc.words())}."
    return Hypothesis(text, Exists(desc), True)


def ve_hypotheses(scene: Scene, rng: random.Random) -> list[Hypothesis]:
    """Six hypotheses about ``scene``, two per class: two true visual statements (entailment), two
    unobservable properties of present objects (neutral), one false visual statement and one unobservable
    property of an absent object (contradiction)."""
    present = [describe(rng.choice(scene.objects), rng, "mid") for _ in range(2)]
    candidates = [Desc(shape=s, color=c) for s in SHAPES for c in COLORS]
    absent = rng.choice([d for d in candidates if d.count(scene) == 0])
    hyps = [_true_visual(scene, rng), _true_visual(scene, rng)]
    hyps += [_unobservable(d, rng) for d in present]
    hyps += [_false_visual(scene, rng), _unobservable(absent, rng)]
    return hyps
