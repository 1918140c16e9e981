"""Scenes of the synthetic world: a few coloured shapes on a 3×3 grid, and partial descriptions of them.

A scene is pure data (no pixels). Positions are grid cells, so the spatial relations used by the captions,
questions and statements are exact: ``a`` is *left of* ``b`` iff ``a.col < b.col`` and *above* ``b`` iff
``a.row < b.row``. The renderer only jitters an object inside its cell by a small fraction of the cell, so
objects in the same column still look aligned.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "white")
SIZES: tuple[str, ...] = ("small", "large")
GRID = 3
"""Cells per side; objects occupy distinct cells."""
NUM_BACKGROUNDS = 4
"""Number of background tones the renderer knows (see ``render.BACKGROUND_TONES``)."""

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene.

    Attributes:
        shape: One of :data:`SHAPES`.
        color: One of :data:`COLORS`.
        size: ``"small"`` or ``"large"``.
        row: Grid row, 0 at the top.
        col: Grid column, 0 at the left.
        dx: Horizontal jitter inside the cell, in [-1, 1] (scaled by the renderer).
        dy: Vertical jitter inside the cell, in [-1, 1].
    """

    shape: str
    color: str
    size: str
    row: int
    col: int
    dx: float = 0.0
    dy: float = 0.0

    def to_json(self) -> dict[str, object]:
        """The object as a JSON record (fixed key order)."""
        return {
            "shape": self.shape,
            "color": self.color,
            "size": self.size,
            "row": self.row,
            "col": self.col,
            "dx": self.dx,
            "dy": self.dy,
        }


@dataclass(frozen=True)
class Scene:
    """What one image shows: its objects and the background tone index."""

    objects: tuple[SceneObject, ...]
    background: int = 0

    def to_json(self) -> dict[str, object]:
        """The scene as a JSON record (fixed key order)."""
        return {"background": self.background, "objects": [o.to_json() for o in self.objects]}

    @classmethod
    def from_json(cls, record: dict[str, object]) -> Scene:
        """Inverse of :meth:`to_json`."""
        objects = record["objects"]
        assert isinstance(objects, list)
        background = record["background"]
        assert isinstance(background, int)
        return cls(tuple(SceneObject(**o) for o in objects), background)

    def signature(self) -> tuple[tuple[str, str, str], ...]:
        """The multiset of (shape, color, size) as a sorted tuple: equal iff a full listing cannot tell
        the two scenes apart."""
        return tuple(sorted((o.shape, o.color, o.size) for o in self.objects))


@dataclass(frozen=True)
class Desc:
    """A partial description of an object; ``None`` attributes match anything.

    ``Desc()`` matches every object ("object"); ``Desc(shape="star", color="red")`` matches red stars.
    """

    shape: str | None = None
    color: str | None = None
    size: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        """Whether ``obj`` has every attribute this description names."""
        return (
            (self.shape is None or obj.shape == self.shape)
            and (self.color is None or obj.color == self.color)
            and (self.size is None or obj.size == self.size)
        )

    def count(self, scene: Scene) -> int:
        """How many objects of ``scene`` match."""
        return sum(1 for o in scene.objects if self.matches(o))

    def words(self) -> str:
        """The bare noun phrase, singular: ``"small red circle"``, ``"red object"``, ``"object"``."""
        parts = [p for p in (self.size, self.color) if p is not None]
        parts.append(self.shape or "object")
        return " ".join(parts)

    def plural(self) -> str:
        """The bare noun phrase, plural: ``"small red crosses"``, ``"objects"``."""
        return pluralize(self.words())

    def indefinite(self) -> str:
        """With an indefinite article: ``"an orange star"``, ``"a circle"``."""
        return article(self.words())


def pluralize(phrase: str) -> str:
    """Pluralise the last word of a noun phrase (the shape nouns are regular)."""
    head, _, last = phrase.rpartition(" ")
    noun = last + ("es" if last.endswith(("s", "x", "sh", "ch")) else "s")
    return f"{head} {noun}" if head else noun


def article(phrase: str) -> str:
    """Prefix ``a`` or ``an`` as English pronunciation of our vocabulary wants it."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def related(a: SceneObject, relation: str, b: SceneObject) -> bool:
    """Whether ``a`` stands in ``relation`` (one of :data:`RELATIONS`) to ``b``."""
    if relation == "left of":
        return a.col < b.col
    if relation == "right of":
        return a.col > b.col
    if relation == "above":
        return a.row < b.row
    if relation == "below":
        return a.row > b.row
    raise ValueError(f"unknown relation {relation!r}; valid: {', '.join(RELATIONS)}")


def _random_object(rng: random.Random, cell: int, focus: Sequence[Desc], focus_prob: float) -> SceneObject:
    base = rng.choice(focus) if focus and rng.random() < focus_prob else Desc()
    return SceneObject(
        shape=base.shape or rng.choice(SHAPES),
        color=base.color or rng.choice(COLORS),
        size=base.size or rng.choice(SIZES),
        row=cell // GRID,
        col=cell % GRID,
        dx=round(rng.uniform(-1.0, 1.0), 3),
        dy=round(rng.uniform(-1.0, 1.0), 3),
    )


def sample_scene(
    rng: random.Random,
    min_objects: int = 2,
    max_objects: int = 4,
    focus: Sequence[Desc] = (),
    focus_prob: float = 0.5,
) -> Scene:
    """Draw a random scene.

    Args:
        rng: The random stream (the only source of randomness).
        min_objects: Fewest objects.
        max_objects: Most objects (at most ``GRID**2``).
        focus: Descriptions to favour: each object copies the attributes of a random one of them with
            probability ``focus_prob`` (the rest are uniform). Used to make statements about rare
            combinations come out true about as often as false.
        focus_prob: See ``focus``.

    Returns:
        A scene with objects in distinct cells, listed in reading order (row, then column).
    """
    n = rng.randint(min_objects, max_objects)
    cells = sorted(rng.sample(range(GRID * GRID), n))
    objects = tuple(_random_object(rng, cell, focus, focus_prob) for cell in cells)
    return Scene(objects, rng.randrange(NUM_BACKGROUNDS))


def sample_distinct_scenes(rng: random.Random, count: int) -> list[Scene]:
    """Draw ``count`` scenes whose object multisets (:meth:`Scene.signature`) are pairwise distinct, so that
    a complete listing of a scene's objects describes it and no other scene of the pool."""
    scenes: list[Scene] = []
    seen: set[tuple[tuple[str, str, str], ...]] = set()
    while len(scenes) < count:
        scene = sample_scene(rng)
        if scene.signature() not in seen:
            seen.add(scene.signature())
            scenes.append(scene)
    return scenes
