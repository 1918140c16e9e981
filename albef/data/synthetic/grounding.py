"""Referring expressions with boxes, in the official RefCOCO+ file layout.

Every object of a scene whose shortest attribute description is unique in it gets an expression ("the red
square", "the small star", "the large blue circle"); its ground-truth box is the box the renderer draws the
shape in (centre of its cell plus jitter, radius by size), in pixels of the written image. Each evaluation image
has proposals: every object's box moved and resized by up to 10 %, plus two object-sized boxes in empty cells
(a detector's false positives), so a random pick is right about 1 / (objects + 2) of the time and only the referred object's proposal has IoU >= 0.5 with the
ground truth. The splits follow RefCOCO+'s naming: ``val`` holds every kind of object, ``testA`` the
expressions about circles, squares and triangles, ``testB`` about stars, crosses and diamonds (RefCOCO+'s
testA is people, testB other objects).

Written files (``grounding/``): ``refcoco+_train.json`` (``image``, ``text``), ``refcoco+_val.json`` and
``refcoco+_test.json`` (plus ``ref_id``), ``dets.json``, ``refs.json`` (the REFER refs as ``albef data prepare
refcoco+`` writes them) and ``instances.json`` (image sizes, annotation boxes). No text is added to the
tokenizer's corpus: every word of an expression is already a word of the world's captions.
"""

from __future__ import annotations

import random
from typing import Any

from albef.data.synthetic.plan import Plan
from albef.data.synthetic.render import JITTER, SIZE_RADIUS
from albef.data.synthetic.scene import GRID, Desc, Scene, SceneObject, sample_scene
from albef.data.synthetic.sizes import SizeSpec

FOLDER = "grounding"
TEST_A_SHAPES = ("circle", "square", "triangle")
"""Shapes of the ``testA`` expressions (``testB``: the others)."""
PROPOSAL_NOISE = 0.1
DISTRACTORS = 2


def object_box(obj: SceneObject, image_size: int) -> list[float]:
    """``[x, y, w, h]`` of the square the renderer draws ``obj`` in (pixels of a side-``image_size`` image)."""
    cell = image_size / GRID
    cx = (obj.col + 0.5 + JITTER * obj.dx) * cell
    cy = (obj.row + 0.5 + JITTER * obj.dy) * cell
    r = SIZE_RADIUS[obj.size] * cell
    return [round(cx - r, 2), round(cy - r, 2), round(2 * r, 2), round(2 * r, 2)]


def referring_expression(scene: Scene, obj: SceneObject) -> str | None:
    """The shortest attribute description that picks ``obj`` alone in ``scene`` ("the red square"), if any."""
    for desc in (
        Desc(shape=obj.shape),
        Desc(shape=obj.shape, color=obj.color),
        Desc(shape=obj.shape, size=obj.size),
        Desc(shape=obj.shape, color=obj.color, size=obj.size),
    ):
        if desc.count(scene) == 1:
            return f"the {desc.words()}"
    return None


def _proposal(box: list[float], rng: random.Random, image_size: int) -> list[float]:
    x, y, w, h = box
    scale = 1 + rng.uniform(-PROPOSAL_NOISE, PROPOSAL_NOISE)
    nx = x + rng.uniform(-PROPOSAL_NOISE, PROPOSAL_NOISE) * w
    ny = y + rng.uniform(-PROPOSAL_NOISE, PROPOSAL_NOISE) * h
    return [round(max(0.0, nx), 2), round(max(0.0, ny), 2), round(w * scale, 2), round(h * scale, 2)]


def _distractor(scene: Scene, rng: random.Random, image_size: int, count: int) -> list[list[float]]:
    """Object-like boxes at ``count`` empty cells (as a detector's false positives: the size of an object)."""
    taken = {(o.row, o.col) for o in scene.objects}
    free = [cell for cell in range(GRID * GRID) if (cell // GRID, cell % GRID) not in taken]
    boxes = []
    for cell in rng.sample(free, min(count, len(free))):
        phantom = SceneObject(
            "circle", "red", rng.choice(("small", "large")), cell // GRID, cell % GRID,
            rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0),
        )  # fmt: skip
        boxes.append(object_box(phantom, image_size))
    return boxes


def build_grounding(plan: Plan, spec: SizeSpec, image_size: int) -> None:
    """The grounding files (module docstring) for ``spec.grounding_images`` (train, val, test) images."""
    n_train, n_val, n_test = spec.grounding_images
    if not n_train:
        return
    train: list[dict[str, Any]] = []
    evaluation: dict[str, list[dict[str, Any]]] = {"val": [], "test": []}
    refs: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    dets: dict[str, list[list[float]]] = {}
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        rng = plan.stream(f"grounding_{split}")
        for _ in range(count):
            scene = sample_scene(rng, min_objects=2, max_objects=4)
            image = plan.add_image(f"{FOLDER}_{split}", scene)
            images.append(
                {"id": image.image_id, "height": image_size, "width": image_size, "file_name": image.path}
            )
            boxes = [object_box(obj, image_size) for obj in scene.objects]
            if split != "train":
                proposals = [_proposal(b, rng, image_size) for b in boxes]
                proposals += _distractor(scene, rng, image_size, DISTRACTORS)
                rng.shuffle(proposals)
                dets[str(image.image_id)] = proposals
            for obj, box in zip(scene.objects, boxes, strict=True):
                text = referring_expression(scene, obj)
                if text is None:
                    continue
                if split == "train":
                    train.append({"image": image.path, "text": text})
                    continue
                ann_id = len(annotations) + 1
                annotations.append({"id": ann_id, "image_id": image.image_id, "bbox": box, "category_id": 1})
                ref_split = "val" if split == "val" else ("testA" if obj.shape in TEST_A_SHAPES else "testB")
                ref_id = len(refs) + 1
                refs.append(
                    {
                        "ref_id": ref_id,
                        "ann_id": ann_id,
                        "image_id": image.image_id,
                        "split": ref_split,
                        "sentences": [text],
                    }
                )
                evaluation[split].append({"image": image.path, "text": text, "ref_id": ref_id})
    plan.files[f"{FOLDER}/refcoco+_train.json"] = train
    plan.files[f"{FOLDER}/refcoco+_val.json"] = evaluation["val"]
    plan.files[f"{FOLDER}/refcoco+_test.json"] = evaluation["test"]
    plan.files[f"{FOLDER}/dets.json"] = dets
    plan.files[f"{FOLDER}/refs.json"] = refs
    plan.files[f"{FOLDER}/instances.json"] = {"images": images, "annotations": annotations}
    splits = {s: sum(r["split"] == s for r in refs) for s in ("val", "testA", "testB")}
    plan.splits["grounding"] = {
        "train_expressions": len(train),
        **{f"{k}_refs": v for k, v in splits.items()},
    }
