"""The meaning of every generated text, as small logical forms evaluated against scenes.

Each caption, question premise, NLVR² statement and SNLI-VE hypothesis is generated together with a form;
its label (or its truth) is *computed* by evaluating the form, never assumed. The same forms let tests check
that a retrieval caption is true of its own image and of no other image of the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from albef.data.synthetic.scene import Desc, Scene, SceneObject, related


class Form(Protocol):
    """A yes/no property of one scene."""

    def holds(self, scene: Scene) -> bool:
        """Whether the scene has the property."""
        ...


class PairForm(Protocol):
    """A yes/no property of an ordered pair of scenes (left image, right image)."""

    def holds(self, left: Scene, right: Scene) -> bool:
        """Whether the pair has the property."""
        ...


@dataclass(frozen=True)
class Exists:
    """Some object matches ``desc``."""

    desc: Desc

    def holds(self, scene: Scene) -> bool:
        return any(self.desc.matches(o) for o in scene.objects)


@dataclass(frozen=True)
class CountIs:
    """Exactly ``n`` objects match ``desc``."""

    desc: Desc
    n: int

    def holds(self, scene: Scene) -> bool:
        return self.desc.count(scene) == self.n


@dataclass(frozen=True)
class Related:
    """Some object matching ``a`` stands in ``relation`` to a different object matching ``b``."""

    a: Desc
    relation: str
    b: Desc

    def holds(self, scene: Scene) -> bool:
        objs = scene.objects
        return any(
            x is not y and self.a.matches(x) and self.b.matches(y) and related(x, self.relation, y)
            for x in objs
            for y in objs
        )


@dataclass(frozen=True)
class Listing:
    """The scene's objects are exactly ``descs``: same number, matched one to one."""

    descs: tuple[Desc, ...]

    def holds(self, scene: Scene) -> bool:
        if len(scene.objects) != len(self.descs):
            return False
        return _match_all(self.descs, list(scene.objects))


def _match_all(descs: tuple[Desc, ...], free: list[SceneObject]) -> bool:
    """Backtracking bipartite match of descriptions to distinct objects (at most 4 × 4)."""
    if not descs:
        return True
    head, rest = descs[0], descs[1:]
    return any(head.matches(obj) and _match_all(rest, free[:i] + free[i + 1 :]) for i, obj in enumerate(free))


@dataclass(frozen=True)
class And:
    """Every part holds."""

    parts: tuple[Form, ...]

    def holds(self, scene: Scene) -> bool:
        return all(p.holds(scene) for p in self.parts)


@dataclass(frozen=True)
class Not:
    """The part does not hold."""

    part: Form

    def holds(self, scene: Scene) -> bool:
        return not self.part.holds(scene)


# ---------------------------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class OnSide:
    """``form`` holds of the ``side`` (``"left"`` or ``"right"``) image."""

    side: str
    form: Form

    def holds(self, left: Scene, right: Scene) -> bool:
        return self.form.holds(left if self.side == "left" else right)


@dataclass(frozen=True)
class Both:
    """``form`` holds of both images."""

    form: Form

    def holds(self, left: Scene, right: Scene) -> bool:
        return self.form.holds(left) and self.form.holds(right)


@dataclass(frozen=True)
class ExactlyOne:
    """``form`` holds of exactly one of the two images."""

    form: Form

    def holds(self, left: Scene, right: Scene) -> bool:
        return self.form.holds(left) != self.form.holds(right)


@dataclass(frozen=True)
class Neither:
    """``form`` holds of neither image."""

    form: Form

    def holds(self, left: Scene, right: Scene) -> bool:
        return not self.form.holds(left) and not self.form.holds(right)


@dataclass(frozen=True)
class MoreOn:
    """The ``side`` image has strictly more objects matching ``desc`` than the other."""

    side: str
    desc: Desc

    def holds(self, left: Scene, right: Scene) -> bool:
        n_left, n_right = self.desc.count(left), self.desc.count(right)
        return n_left > n_right if self.side == "left" else n_right > n_left


@dataclass(frozen=True)
class TotalIs:
    """Exactly ``n`` objects matching ``desc`` across the two images together."""

    desc: Desc
    n: int

    def holds(self, left: Scene, right: Scene) -> bool:
        return self.desc.count(left) + self.desc.count(right) == self.n
