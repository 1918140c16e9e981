"""VQA questions about a scene, their answers, and ten simulated human answers per question.

Kinds (with the official VQA v2 ``answer_type``): colour ("other"), shape ("other"), count ("number",
answers as digits), existence ("yes/no", balanced by the caller) and relation ("other"). A question only
refers to an object its phrase identifies uniquely, so every question has exactly one correct answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from albef.data.synthetic.language import RELATION_PHRASES
from albef.data.synthetic.scene import COLORS, RELATIONS, SHAPES, Desc, Scene, related

KINDS: tuple[str, ...] = ("color", "shape", "count", "exist", "relation")

COLOR_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "red": ("dark red", "pink", "orange"),
    "green": ("dark green", "lime"),
    "blue": ("dark blue", "navy", "purple"),
    "yellow": ("gold", "orange"),
    "purple": ("violet", "blue", "pink"),
    "orange": ("yellow", "dark orange", "red"),
    "cyan": ("teal", "light blue", "blue"),
    "white": ("gray", "silver"),
}
"""What a careless or differently-spoken annotator answers instead (a synonym or a neighbouring colour)."""

SHAPE_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "circle": ("ball", "dot", "oval"),
    "square": ("box", "rectangle"),
    "triangle": ("pyramid",),
    "star": ("sun",),
    "cross": ("plus", "plus sign"),
    "diamond": ("rhombus", "square"),
}

DISAGREEMENT_WEIGHTS: tuple[float, ...] = (0.45, 0.25, 0.15, 0.1, 0.05)
"""P(k of the 10 annotators give another answer), k = 0..4: the true answer always has the majority."""


@dataclass(frozen=True)
class Question:
    """A question, its single correct answer and the official VQA v2 type labels."""

    text: str
    answer: str
    kind: str
    question_type: str
    answer_type: str


def color_question(scene: Scene, rng: random.Random) -> Question | None:
    """Question "What color is the star?" about an object its shape (or size and shape) identifies."""
    options = []
    for obj in scene.objects:
        for desc in (Desc(shape=obj.shape), Desc(shape=obj.shape, size=obj.size)):
            if desc.count(scene) == 1:
                options.append((desc, obj.color))
                break
    if not options:
        return None
    desc, answer = rng.choice(options)
    return Question(f"What color is the {desc.words()}?", answer, "color", "what color is the", "other")


def shape_question(scene: Scene, rng: random.Random) -> Question | None:
    """Question "What shape is the red object?" about an object its colour identifies."""
    options = [o for o in scene.objects if Desc(color=o.color).count(scene) == 1]
    if not options:
        return None
    obj = rng.choice(options)
    return Question(
        f"What shape is the {obj.color} object?", obj.shape, "shape", "what shape is the", "other"
    )


def count_question(scene: Scene, rng: random.Random) -> Question:
    """Question "How many squares are there?" (sometimes about an absent kind, answer "0").

    The answer is drawn uniformly from the counts the scene offers before a kind with that count is
    chosen, so "1" does not dominate the number answers.
    """
    if rng.random() < 0.15:
        desc = Desc(shape=rng.choice(SHAPES)) if rng.random() < 0.5 else Desc(color=rng.choice(COLORS))
    else:
        kinds = [Desc()]
        for obj in scene.objects:
            kinds += [Desc(shape=obj.shape), Desc(color=obj.color), Desc(obj.shape, obj.color)]
        by_count: dict[int, list[Desc]] = {}
        for kind in kinds:
            by_count.setdefault(kind.count(scene), []).append(kind)
        desc = rng.choice(by_count[rng.choice(sorted(by_count))])
    text = f"How many {desc.plural()} are there?"
    return Question(text, str(desc.count(scene)), "count", "how many", "number")


def exist_question(scene: Scene, rng: random.Random, want_yes: bool) -> Question:
    """Question "Is there a red star?" with the requested answer; a "no" question changes one attribute of a
    present object (a near miss) so it cannot be answered from the words alone."""
    obj = rng.choice(scene.objects)
    desc = Desc(shape=obj.shape, color=obj.color)
    if not want_yes:
        candidates = [Desc(obj.shape, c) for c in COLORS] + [Desc(s, obj.color) for s in SHAPES]
        absent = [d for d in candidates if d.count(scene) == 0]
        desc = rng.choice(absent)
    answer = "yes" if desc.count(scene) > 0 else "no"
    return Question(f"Is there {desc.indefinite()}?", answer, "exist", "is there a", "yes/no")


def relation_question(scene: Scene, rng: random.Random) -> Question | None:
    """Question "What is to the left of the blue circle?" (answer: a shape) or "What color is the object
    above the red star?" (answer: a colour), when exactly one object stands in that relation to a unique referent."""
    options = []
    for ref in scene.objects:
        ref_desc = Desc(shape=ref.shape, color=ref.color)
        if ref_desc.count(scene) != 1:
            continue
        for rel in RELATIONS:
            hits = [o for o in scene.objects if o is not ref and related(o, rel, ref)]
            if len(hits) == 1:
                options.append((ref_desc, rel, hits[0]))
    if not options:
        return None
    ref_desc, rel, target = rng.choice(options)
    where = f"{RELATION_PHRASES[rel]} the {ref_desc.words()}"
    if rng.random() < 0.7:
        return Question(f"What is {where}?", target.shape, "relation", "what is", "other")
    text = f"What color is the object {where}?"
    return Question(text, target.color, "relation", "what color is the", "other")


def make_question(scene: Scene, rng: random.Random, kind: str, want_yes: bool) -> Question | None:
    """A question of ``kind`` (one of :data:`KINDS`), or ``None`` if the scene cannot support one."""
    if kind == "color":
        return color_question(scene, rng)
    if kind == "shape":
        return shape_question(scene, rng)
    if kind == "count":
        return count_question(scene, rng)
    if kind == "exist":
        return exist_question(scene, rng, want_yes)
    if kind == "relation":
        return relation_question(scene, rng)
    raise ValueError(f"unknown question kind {kind!r}; valid: {', '.join(KINDS)}")


def _alternative(question: Question, rng: random.Random) -> str:
    answer = question.answer
    if question.answer_type == "yes/no":
        return "no" if answer == "yes" else "yes"
    if question.answer_type == "number":
        n = int(answer)
        return str(n + 1) if n == 0 or rng.random() < 0.5 else str(n - 1)
    if answer in COLOR_ALTERNATIVES:
        return rng.choice(COLOR_ALTERNATIVES[answer])
    return rng.choice(SHAPE_ALTERNATIVES[answer])


def human_answers(question: Question, rng: random.Random) -> list[tuple[str, str]]:
    """Ten (answer, answer_confidence) pairs: mostly the true answer, up to four alternatives (a synonym, a
    neighbouring colour, an off-by-one count, a flipped yes/no), so VQA accuracy is not simply 0 or 1."""
    k = rng.choices(range(len(DISAGREEMENT_WEIGHTS)), DISAGREEMENT_WEIGHTS)[0]
    others = set(rng.sample(range(10), k))
    answers = []
    for i in range(10):
        if i in others:
            answers.append((_alternative(question, rng), rng.choice(("maybe", "yes", "no"))))
        else:
            answers.append((question.answer, "yes" if rng.random() < 0.9 else "maybe"))
    return answers
