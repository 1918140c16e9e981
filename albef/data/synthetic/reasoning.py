"""Two-image reasoning (NLVR²) and visual entailment (SNLI-VE) data.

NLVR² files come in ALBEF's layout (``nlvr_{train,dev,test}.json``) and in lil-lab's JSON-lines layout
(``nlvr_raw/{train,dev,test}.jsonl``). One *set* is one sentence judged against 1-4 image pairs, so its
examples share ``split-setid-*-0``: a consistency group. SNLI-VE files hold ids without extension; the
images are ``ve_images/<id>.jpg`` and ``image`` is ``"ve_images/<id>"`` (see :data:`VE_IMAGE_NOTE`).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from albef.data.synthetic.plan import VE_IMAGE_DIR, Plan
from albef.data.synthetic.scene import Scene, sample_scene
from albef.data.synthetic.sizes import SizeSpec
from albef.data.synthetic.statements import Statement, random_statement, sample_pair, ve_hypotheses

NLVR_SPLITS: tuple[str, ...] = ("train", "dev", "test")
VE_SPLITS: tuple[str, ...] = ("train", "dev", "test")
GROUP_SIZES: tuple[int, ...] = (4, 3, 2, 1)
GROUP_WEIGHTS: tuple[float, ...] = (0.6, 0.28, 0.1, 0.02)
"""Pairs per sentence, close to the real NLVR² dev split (4: 59%, 3: 29%, 2: 10%, 1: 2%)."""
WORKERS = 40
VE_IMAGE_NOTE = (
    "SNLI-VE 'image' is an id without extension, as in the official files; the official loader opens "
    "os.path.join(image_root, image + '.jpg'). Here the id is 've_images/<n>' and the file "
    "ve_images/<n>.jpg (JPEG, as Flickr30K), so image_root is the world root like every other task."
)
VE_NEUTRAL_NOTE = (
    "entailment: a true visual statement; contradiction: a false visual statement, or an unobservable "
    "property (material, weight, temperature, motion, age, price) of an object the image does not contain; "
    "neutral: an unobservable property of an object the image does contain. Neutral versus contradiction "
    "therefore needs the image; a hypothesis-only model can still reach 2/3 by construction (the 'there "
    "is a X that is made of wood' wording is neutral twice as often as contradiction)."
)


def _targets(size: int, balance: Counter[bool], rng: random.Random) -> list[bool]:
    """Labels for one group: half True and half False, the odd one to the label that is behind."""
    behind = balance[True] < balance[False] or (balance[True] == balance[False] and rng.random() < 0.5)
    targets = [True] * (size // 2) + [False] * (size // 2) + ([behind] if size % 2 else [])
    rng.shuffle(targets)
    balance.update(targets)
    return targets


def _pairs(statement: Statement, targets: list[bool], rng: random.Random) -> list[tuple[Scene, Scene]] | None:
    pairs = []
    for want in targets:
        pair = sample_pair(statement, want, rng)
        if pair is None:
            return None
        pairs.append(pair)
    return pairs


def _raw_record(split: str, example: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    label = example["label"]
    record: dict[str, Any] = {
        "validation": {f"w{rng.randrange(WORKERS)}": label},
        "sentence": example["sentence"],
        "left_url": example["images"][0],
        "writer": f"w{rng.randrange(WORKERS)}",
        "label": label,
        "right_url": example["images"][1],
        "synset": example["synset"],
        "query": f"{example['synset']} {rng.randrange(1, 60)}",
        "identifier": example["identifier"],
    }
    if split != "train":
        flip = {"True": "False", "False": "True"}
        record["extra_validations"] = {
            f"w{rng.randrange(WORKERS)}-{k}": label if rng.random() < 0.95 else flip[label] for k in range(4)
        }
    return record


def _nlvr_split(plan: Plan, split: str, n_sets: int) -> list[dict[str, Any]]:
    rng = plan.stream(f"nlvr_{split}")
    balance: Counter[bool] = Counter()
    examples: list[dict[str, Any]] = []
    for set_id in range(n_sets):
        targets = _targets(rng.choices(GROUP_SIZES, GROUP_WEIGHTS)[0], balance, rng)
        pairs = None
        while pairs is None:
            statement = random_statement(rng)
            pairs = _pairs(statement, targets, rng)
        for pair_id, ((left, right), want) in enumerate(zip(pairs, targets, strict=True)):
            stem = f"{split}-{set_id}-{pair_id}"
            images = [
                plan.add_image(f"nlvr_{split}", s, f"{stem}-img{k}").path for k, s in enumerate((left, right))
            ]
            label = str(statement.form.holds(left, right))
            assert label == str(want), "sampled pair does not have the wanted label"
            examples.append(
                {
                    "images": images,
                    "sentence": statement.text,
                    "label": label,
                    "identifier": f"{stem}-0",
                    "synset": statement.synset,
                }
            )
        plan.texts.append(statement.text)
    return examples


def build_nlvr(plan: Plan, spec: SizeSpec) -> None:
    """NLVR² in ALBEF's layout and in lil-lab's JSON-lines layout, balanced True/False per split."""
    for split, n_sets in zip(NLVR_SPLITS, spec.nlvr_sets, strict=True):
        examples = _nlvr_split(plan, split, n_sets)
        plan.files[f"nlvr_{split}.json"] = [
            {"images": e["images"], "sentence": e["sentence"], "label": e["label"]} for e in examples
        ]
        rng = plan.stream(f"nlvr_{split}_raw")
        plan.files[f"nlvr_raw/{split}.jsonl"] = [_raw_record(split, e, rng) for e in examples]
        true = sum(e["label"] == "True" for e in examples)
        plan.splits[f"nlvr_{split}"] = {
            "sets": n_sets,
            "pairs": len(examples),
            "true": true,
            "false": len(examples) - true,
        }


def build_ve(plan: Plan, spec: SizeSpec) -> None:
    """SNLI-VE splits: six hypotheses per image, two per label."""
    for split, n_images in zip(VE_SPLITS, spec.ve_images, strict=True):
        rng = plan.stream(f"ve_{split}")
        records = []
        for _ in range(n_images):
            scene = sample_scene(rng)
            image = plan.add_image("", scene, root=VE_IMAGE_DIR)
            image_ref = image.path.rsplit(".", 1)[0]
            for hypothesis in ve_hypotheses(scene, rng):
                records.append(
                    {"image": image_ref, "sentence": hypothesis.text, "label": hypothesis.label(scene)}
                )
                plan.texts.append(hypothesis.text)
        plan.files[f"ve_{split}.json"] = records
        labels = Counter(r["label"] for r in records)
        plan.splits[f"ve_{split}"] = {
            "images": n_images,
            "hypotheses": len(records),
            **dict(sorted(labels.items())),
        }
    plan.info["ve_images"] = VE_IMAGE_NOTE
    plan.info["ve_labels"] = VE_NEUTRAL_NOTE
