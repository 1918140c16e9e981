"""Caption data: ``pretrain.json``, the Karpathy-style retrieval splits and the COCO-format test captions."""

from __future__ import annotations

import random
from typing import Any

from albef.data.synthetic.language import Caption, random_caption, unique_caption
from albef.data.synthetic.plan import Plan, PlannedImage
from albef.data.synthetic.scene import Scene, sample_distinct_scenes, sample_scene
from albef.data.synthetic.sizes import SizeSpec

COCO_INFO = {
    "description": "albef synthetic world: retrieval test captions in COCO caption format",
    "url": "",
    "version": "1",
    "year": 2021,
    "contributor": "albef.data.synthetic",
    "date_created": "",
}
RETRIEVAL_POOL = 100
"""Retrieval training captions are unique within consecutive pools of this many images."""
COCO_LICENSES = [
    {"id": 1, "name": "CC0 1.0 (generated data)", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}
]


def _distinct_captions(scene: Scene, count: int, rng: random.Random) -> list[str]:
    """``count`` true captions, distinct where the scene allows it within a few tries."""
    texts: list[str] = []
    for _ in range(count * 6):
        text = random_caption(scene, rng).text
        if text not in texts:
            texts.append(text)
        if len(texts) == count:
            return texts
    while len(texts) < count:
        texts.append(random_caption(scene, rng).text)
    return texts


def build_pretrain(plan: Plan, spec: SizeSpec) -> None:
    """``pretrain.json``: ``[{image, caption: [str, ...]}]`` with a share of captions from other images.

    The swapped captions imitate the noisy alt-text of web pretraining data; their number and rate go to
    the manifest.
    """
    rng = plan.stream("pretrain")
    scenes = [sample_scene(rng) for _ in range(spec.pretrain_images)]
    images = [plan.add_image("pretrain", s) for s in scenes]
    captions = [_distinct_captions(s, spec.pretrain_captions, rng) for s in scenes]
    total = len(scenes) * spec.pretrain_captions
    n_noisy = round(spec.noisy_caption_fraction * total)
    for position in sorted(rng.sample(range(total), n_noisy)):
        i, j = divmod(position, spec.pretrain_captions)
        donor = rng.randrange(len(scenes) - 1)
        donor += donor >= i
        captions[i][j] = random_caption(scenes[donor], rng).text
    plan.files["pretrain.json"] = [
        {"image": image.path, "caption": caps} for image, caps in zip(images, captions, strict=True)
    ]
    plan.texts.extend(t for caps in captions for t in caps)
    plan.info["pretrain_noise"] = {
        "requested_fraction": spec.noisy_caption_fraction,
        "swapped_captions": n_noisy,
        "total_captions": total,
        "actual_fraction": n_noisy / total if total else 0.0,
        "meaning": "captions replaced by a caption of another pretraining image (noisy web alt-text)",
    }
    plan.splits["pretrain"] = {"images": len(scenes), "captions": total}


def _described_pool(
    plan: Plan, rng: random.Random, folder: str, n_images: int, count: int
) -> list[tuple[PlannedImage, list[str]]]:
    """``n_images`` distinct scenes under ``folder``, each with ``count`` captions true of it and of no other
    scene of the pool; the captions go to the tokenizer corpus and their forms to the plan."""
    scenes = sample_distinct_scenes(rng, n_images)
    images = [plan.add_image(folder, s) for s in scenes]
    pool = []
    for index, (scene, image) in enumerate(zip(scenes, images, strict=True)):
        others = scenes[:index] + scenes[index + 1 :]
        chosen: list[Caption] = []
        for _ in range(count):
            caption = unique_caption(scene, others, rng, avoid={c.text for c in chosen})
            chosen.append(caption)
            plan.forms[(image.path, caption.text)] = caption.form
        pool.append((image, [c.text for c in chosen]))
    plan.texts.extend(t for _, texts in pool for t in texts)
    return pool


def _eval_split(plan: Plan, name: str, n_images: int, count: int) -> list[dict[str, Any]]:
    pool = _described_pool(plan, plan.stream(f"retrieval_{name}"), f"retrieval_{name}", n_images, count)
    plan.splits[f"retrieval_{name}"] = {"images": n_images, "captions": n_images * count}
    return [{"image": image.path, "caption": texts} for image, texts in pool]


def _coco_captions(plan: Plan, records: list[dict[str, Any]], image_size: int) -> dict[str, Any]:
    by_path = {image.path: image.image_id for image in plan.images}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for record in records:
        image_id = by_path[record["image"]]
        images.append(
            {"id": image_id, "file_name": record["image"], "width": image_size, "height": image_size}
        )
        for caption in record["caption"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
    return {"info": COCO_INFO, "licenses": COCO_LICENSES, "images": images, "annotations": annotations}


def build_retrieval(plan: Plan, spec: SizeSpec, image_size: int) -> None:
    """Retrieval splits in the Karpathy layout, on disjoint images.

    ``retrieval_train.json`` has one record per caption (``image_id`` names the image);
    ``retrieval_val.json`` / ``retrieval_test.json`` have one record per image with a list of captions,
    each of which describes its own image and no other image of the split. ``coco_captions_test.json``
    repeats the test split in COCO caption format.

    Training captions are written the same way within pools of :data:`RETRIEVAL_POOL` images (the size of
    the test split): as with COCO's human captions, a training caption tells its image from the others, so
    finetuning sees the kind of caption the evaluation measures (the pretraining captions stay short and
    generic, as web alt-text).
    """
    n_train, n_val, n_test = spec.retrieval_images
    rng = plan.stream("retrieval_train")
    train = []
    for start in range(0, n_train, RETRIEVAL_POOL):
        size = min(RETRIEVAL_POOL, n_train - start)
        for image, texts in _described_pool(plan, rng, "retrieval_train", size, spec.captions_per_image):
            train += [{"image": image.path, "caption": t, "image_id": str(image.image_id)} for t in texts]
    plan.files["retrieval_train.json"] = train
    plan.splits["retrieval_train"] = {"images": n_train, "captions": len(train)}
    plan.files["retrieval_val.json"] = _eval_split(plan, "val", n_val, spec.captions_per_image)
    test = _eval_split(plan, "test", n_test, spec.captions_per_image)
    plan.files["retrieval_test.json"] = test
    plan.files["coco_captions_test.json"] = _coco_captions(plan, test, image_size)
