"""The embedded synthetic image–text world: the default data of every ``albef`` command.

Scenes of 2–4 coloured shapes on a 3×3 grid are rendered to small PNGs and described by captions,
questions and statements whose truth is computed from the scenes, so a model can really learn them.
Every file follows the official ALBEF format (plus VQA v2, lil-lab NLVR² and COCO-caption versions of the
test splits), so the readers, trainers and evaluators of the real datasets run on it unchanged.

Typical use::

    from albef.data.synthetic import ensure_world
    root = ensure_world("runs/synthetic/medium-seed0", size="medium", seed=0)

Importing this package has no side effects.
"""

from albef.data.synthetic.plan import Plan, PlannedImage
from albef.data.synthetic.scene import Desc, Scene, SceneObject
from albef.data.synthetic.sizes import SIZES, SizeSpec
from albef.data.synthetic.world import (
    DEFAULT_IMAGE_SIZE,
    GENERATOR,
    WORLD_VERSION,
    Progress,
    SyntheticWorldError,
    ensure_world,
    generate_world,
    get_size,
    plan_world,
    world_matches,
)

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "GENERATOR",
    "SIZES",
    "WORLD_VERSION",
    "Desc",
    "Plan",
    "PlannedImage",
    "Progress",
    "Scene",
    "SceneObject",
    "SizeSpec",
    "SyntheticWorldError",
    "ensure_world",
    "generate_world",
    "get_size",
    "plan_world",
    "world_matches",
]
