"""The embedded synthetic world: official schemas, grounded texts, chance levels, determinism, atomicity."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from albef.data.formats import read_negative_captions
from albef.data.synthetic import (
    SIZES,
    WORLD_VERSION,
    Desc,
    Plan,
    Scene,
    SyntheticWorldError,
    ensure_world,
    generate_world,
    plan_world,
    world_matches,
)
from albef.data.synthetic.captioning import RETRIEVAL_POOL
from albef.data.synthetic.chance import retrieval_chance, vqa_accuracy
from albef.data.synthetic.logic import CountIs, Exists, Listing, Related
from albef.data.synthetic.scene import COLORS, SHAPES, SceneObject
from albef.data.synthetic.vqa import V2_IMAGE_TEMPLATE

SEED = 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "world"
    generate_world(root, "small", SEED)
    return root


@pytest.fixture(scope="module")
def plan() -> Plan:
    return plan_world("small", SEED)


@pytest.fixture(scope="module")
def manifest(world: Path) -> dict[str, Any]:
    return json.loads((world / "manifest.json").read_text())


@pytest.fixture(scope="module")
def scenes(world: Path) -> dict[str, Scene]:
    return {path: Scene.from_json(rec) for path, rec in _load(world, "scenes.json").items()}


def _load(world: Path, name: str) -> Any:
    return json.loads((world / name).read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ manifest


def test_manifest_identifies_the_world(manifest: dict[str, Any]) -> None:
    assert manifest["generator"] == "albef.data.synthetic"
    assert manifest["world_version"] == WORLD_VERSION
    assert (manifest["seed"], manifest["size"], manifest["image_size"]) == (SEED, "small", 64)
    assert manifest["notes"]["pretrain_noise"]["requested_fraction"] == SIZES["small"].noisy_caption_fraction
    assert "date" not in json.dumps(manifest).replace("date_created", "")


def test_manifest_lists_every_file_with_its_hash_and_count(world: Path, manifest: dict[str, Any]) -> None:
    on_disk = {
        p.relative_to(world).as_posix()
        for p in world.rglob("*")
        if p.is_file() and not p.relative_to(world).as_posix().startswith(("images/", "ve_images/"))
    }
    assert on_disk - {"manifest.json"} == set(manifest["files"])
    for name, entry in manifest["files"].items():
        assert _sha256(world / name) == entry["sha256"], name
        assert (world / name).stat().st_size == entry["bytes"], name
        if name.endswith(".json"):
            content = _load(world, name)
            items = (
                content.get("annotations", content.get("questions", content))
                if isinstance(content, dict)
                else content
            )
            assert len(items) == entry["records"], name
        else:
            assert (world / name).read_text().count("\n") == entry["records"], name


def test_image_checksums_cover_every_image(world: Path, manifest: dict[str, Any]) -> None:
    listed = {}
    for line in (world / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split("  ", 1)
        listed[path] = digest
    images = {p.relative_to(world).as_posix() for p in world.rglob("*") if p.suffix in (".png", ".jpg")}
    assert set(listed) == images
    assert len(images) == manifest["images"]["count"]
    for path in sorted(images)[:: max(1, len(images) // 20)]:
        assert _sha256(world / path) == listed[path]
        with Image.open(world / path) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
            assert not image.info.get("exif") and "timestamp" not in image.info


def test_split_counts_match_files(world: Path, manifest: dict[str, Any]) -> None:
    splits = manifest["splits"]
    spec = SIZES["small"]
    assert splits["pretrain"] == {"images": spec.pretrain_images, "captions": spec.pretrain_images * 3}
    assert len(_load(world, "retrieval_test.json")) == splits["retrieval_test"]["images"] == 16
    for split in ("train", "dev", "test"):
        assert len(_load(world, f"nlvr_{split}.json")) == splits[f"nlvr_{split}"]["pairs"]
        assert len(_load(world, f"ve_{split}.json")) == splits[f"ve_{split}"]["hypotheses"]


# ------------------------------------------------------------------------------------------------ schemas


def _keys(records: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    for record in records:
        assert tuple(record) == keys, record


def test_caption_files_follow_the_official_schema(world: Path) -> None:
    pretrain = _load(world, "pretrain.json")
    _keys(pretrain, ("image", "caption"))
    assert all(
        isinstance(r["caption"], list) and all(isinstance(c, str) for c in r["caption"]) for r in pretrain
    )
    train = _load(world, "retrieval_train.json")
    _keys(train, ("image", "caption", "image_id"))
    assert all(isinstance(r["caption"], str) for r in train)
    images = {
        name: {r["image"] for r in _load(world, name)}
        for name in ("retrieval_val.json", "retrieval_test.json")
    }
    images["train"] = {r["image"] for r in train}
    assert not (images["train"] & images["retrieval_test.json"]) and not (
        images["train"] & images["retrieval_val.json"]
    )
    for name in ("retrieval_val.json", "retrieval_test.json"):
        records = _load(world, name)
        _keys(records, ("image", "caption"))
        assert all(len(r["caption"]) == 5 and len(set(r["caption"])) == 5 for r in records)
    for record in pretrain + train:
        assert (world / record["image"]).is_file()


def test_vqa_files_follow_the_official_schema(world: Path) -> None:
    train = _load(world, "vqa_train.json")
    vqa = [r for r in train if r["dataset"] == "vqa"]
    vg = [r for r in train if r["dataset"] == "vg"]
    assert vqa and vg
    _keys(vqa, ("question_id", "question", "answer", "image", "dataset"))
    _keys(vg, ("question", "answer", "image", "dataset"))
    assert all(len(r["answer"]) == 10 for r in vqa) and all(isinstance(r["answer"], str) for r in vg)
    test = _load(world, "vqa_test.json")
    _keys(test, ("question_id", "question", "image", "dataset"))
    answers = _load(world, "answer_list.json")
    assert len(answers) == len(set(answers)) and {"yes", "no", "0", "1", "2"} <= set(answers)
    every = {a for r in vqa for a in r["answer"]} | {r["answer"] for r in vg}
    assert every <= set(answers)
    ids = [r["question_id"] for r in vqa + test]
    assert len(ids) == len(set(ids))


def test_vqa_v2_files(world: Path) -> None:
    questions = _load(world, "vqa_v2/questions_test.json")
    annotations = _load(world, "vqa_v2/annotations_test.json")
    for top in (questions, annotations):
        assert {"info", "task_type", "data_type", "license", "data_subtype"} <= set(top)
    test = _load(world, "vqa_test.json")
    assert [q["question_id"] for q in questions["questions"]] == [r["question_id"] for r in test]
    for question, record in zip(questions["questions"], test, strict=True):
        image = V2_IMAGE_TEMPLATE.format(subtype=questions["data_subtype"], image_id=question["image_id"])
        assert image == record["image"] and (world / image).is_file()
    types = Counter()
    for ann in annotations["annotations"]:
        assert len(ann["answers"]) == 10
        assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
        assert all(a["answer_confidence"] in ("yes", "maybe", "no") for a in ann["answers"])
        given = Counter(a["answer"] for a in ann["answers"])
        assert ann["multiple_choice_answer"] == given.most_common(1)[0][0]
        assert ann["answer_type"] in ("yes/no", "number", "other") and ann["question_type"]
        if ann["answer_type"] == "number":
            assert ann["multiple_choice_answer"].isdigit()
        types[ann["answer_type"]] += 1
    assert set(types) == {"yes/no", "number", "other"}
    scores = [
        vqa_accuracy(a["multiple_choice_answer"], [x["answer"] for x in a["answers"]])
        for a in annotations["annotations"]
    ]
    assert all(s == 1.0 for s in scores)
    partial = [
        vqa_accuracy(x["answer"], [y["answer"] for y in a["answers"]])
        for a in annotations["annotations"]
        for x in a["answers"]
        if x["answer"] != a["multiple_choice_answer"]
    ]
    assert partial and any(0 < s < 1 for s in partial), "annotators should disagree sometimes"


def test_nlvr_files(world: Path) -> None:
    for split in ("train", "dev", "test"):
        albef = _load(world, f"nlvr_{split}.json")
        _keys(albef, ("images", "sentence", "label"))
        labels = Counter(r["label"] for r in albef)
        assert set(labels) == {"True", "False"} and abs(labels["True"] - labels["False"]) <= 1
        raw = [json.loads(line) for line in (world / f"nlvr_raw/{split}.jsonl").read_text().splitlines()]
        expected = [
            "validation",
            "sentence",
            "left_url",
            "writer",
            "label",
            "right_url",
            "synset",
            "query",
            "identifier",
        ]
        groups: dict[str, set[str]] = {}
        for record, short in zip(raw, albef, strict=True):
            assert list(record)[:9] == expected
            assert ("extra_validations" in record) == (split != "train")
            assert re.fullmatch(rf"{split}-\d+-\d+-0", record["identifier"])
            set_id, pair_id = record["identifier"].split("-")[1:3]
            assert record["left_url"].endswith(f"{split}-{set_id}-{pair_id}-img0.png")
            assert [record["left_url"], record["right_url"]] == short["images"]
            assert (record["sentence"], record["label"]) == (short["sentence"], short["label"])
            groups.setdefault(f"{split}-{set_id}", set()).add(record["sentence"])
        assert all(len(sentences) == 1 for sentences in groups.values())
        sizes = Counter(r["identifier"].rsplit("-", 2)[0] for r in raw)
        assert max(sizes.values()) <= 4 and any(size > 1 for size in sizes.values())


def test_ve_files(world: Path) -> None:
    for split in ("train", "dev", "test"):
        records = _load(world, f"ve_{split}.json")
        _keys(records, ("image", "sentence", "label"))
        labels = Counter(r["label"] for r in records)
        assert labels["entailment"] == labels["neutral"] == labels["contradiction"] == len(records) // 3
        for record in records:
            assert not record["image"].endswith(".jpg")
            assert (world / (record["image"] + ".jpg")).is_file()


def test_coco_file_loads_with_pycocotools(world: Path) -> None:
    coco_module = pytest.importorskip("pycocotools.coco")
    coco = coco_module.COCO(str(world / "coco_captions_test.json"))
    test = _load(world, "retrieval_test.json")
    assert len(coco.getImgIds()) == len(test)
    for image_id in coco.getImgIds():
        image = coco.loadImgs([image_id])[0]
        captions = [a["caption"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))]
        assert (image["width"], image["height"]) == (64, 64)
        assert {"image": image["file_name"], "caption": captions} in test


# ------------------------------------------------------------------------------------------------ grounding


def test_retrieval_eval_captions_describe_only_their_image(
    world: Path, plan: Plan, scenes: dict[str, Scene]
) -> None:
    for name in ("retrieval_val.json", "retrieval_test.json"):
        records = _load(world, name)
        split_scenes = {r["image"]: scenes[r["image"]] for r in records}
        for record in records:
            for caption in record["caption"]:
                form = plan.forms[(record["image"], caption)]
                holders = [path for path, scene in split_scenes.items() if form.holds(scene)]
                assert holders == [record["image"]], (caption, holders)


def test_retrieval_train_captions_describe_only_their_image_in_their_pool(
    world: Path, plan: Plan, scenes: dict[str, Scene]
) -> None:
    records = _load(world, "retrieval_train.json")
    order = list(dict.fromkeys(r["image"] for r in records))  # images in file order
    pools = [order[i : i + RETRIEVAL_POOL] for i in range(0, len(order), RETRIEVAL_POOL)]
    pool_of = {image: n for n, pool in enumerate(pools) for image in pool}
    for record in records:
        form = plan.forms[(record["image"], record["caption"])]
        pool = pools[pool_of[record["image"]]]
        holders = [image for image in pool if form.holds(scenes[image])]
        assert holders == [record["image"]], (record["caption"], holders)
    by_image = Counter(r["image"] for r in records)
    assert set(by_image.values()) == {5}


def _parse_desc(phrase: str) -> Desc:
    """ "small red circles" -> Desc(circle, red, small), written without the generator's helpers."""
    *adjectives, noun = phrase.split()
    nouns = {s: s for s in SHAPES} | {s + ("es" if s.endswith("s") else "s"): s for s in SHAPES}
    nouns |= {"object": "", "objects": ""}
    assert noun in nouns, phrase
    size = next((a for a in adjectives if a in ("small", "large")), None)
    color = next((a for a in adjectives if a in COLORS), None)
    assert len(adjectives) == (size is not None) + (color is not None), phrase
    return Desc(shape=nouns[noun] or None, color=color, size=size)


def test_vqa_answers_are_true_of_the_images(world: Path, scenes: dict[str, Scene]) -> None:
    """Parse the count and existence questions independently of the generator and check the answers."""
    checked = 0
    for record in _load(world, "vqa_train.json"):
        answer = (
            Counter(record["answer"]).most_common(1)[0][0] if record["dataset"] == "vqa" else record["answer"]
        )
        scene = scenes[record["image"]]
        if match := re.fullmatch(r"How many (.+) are there\?", record["question"]):
            assert str(_parse_desc(match.group(1)).count(scene)) == answer, record
            checked += 1
        elif match := re.fullmatch(r"Is there an? (.+)\?", record["question"]):
            desc = _parse_desc(match.group(1))
            assert desc.shape in SHAPES
            assert ("yes" if desc.count(scene) else "no") == answer, record
            checked += 1
    assert checked > 20


RELATIONS = {"to the left of": "left of", "to the right of": "right of", "above": "above", "below": "below"}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def _related(text: str) -> Related | None:
    """The logical form of "A <desc> <relation> a <desc>.", parsed without the generator's helpers."""
    match = re.fullmatch(rf"An? (.+?) ({'|'.join(RELATIONS)}) an? (.+?)\.", text)
    if match is None:
        return None
    return Related(_parse_desc(match.group(1)), RELATIONS[match.group(2)], _parse_desc(match.group(3)))


def test_binding_pairs_differ_only_in_where_things_stand(world: Path, scenes: dict[str, Scene]) -> None:
    """``pretrain_binding_pairs.json`` (the quickstart's second pretraining stage): every pair is a relation
    caption true of its pretraining image and a false one made of the same words, reordered (swapped objects or
    colours) or with the opposite relation; the library reads it as ``data.itm_text_negatives``."""
    pairs = _load(world, "pretrain_binding_pairs.json")
    kinds = {"reordered": 0, "opposite relation": 0}
    for image, items in pairs.items():
        assert image.startswith("images/pretrain/") and items
        assert len({item["negative"] for item in items}) == len(items)  # one item per distinct false caption
        for item in items:
            true, false = _related(item["caption"]), _related(item["negative"])
            assert true is not None and false is not None, item
            assert true.holds(scenes[image]) and not false.holds(scenes[image]), (image, item)
            words, negative = (
                text.lower().rstrip(".").split() for text in (item["caption"], item["negative"])
            )
            if sorted(words) == sorted(negative):
                kinds["reordered"] += 1
            else:
                assert [OPPOSITE.get(w, w) for w in words] == negative, item
                kinds["opposite relation"] += 1
    assert min(kinds.values()) > 50, kinds
    read = read_negative_captions(world / "pretrain_binding_pairs.json")
    assert {image: len(items) for image, items in read.items()} == {i: len(v) for i, v in pairs.items()}


def test_pretrain_negatives_pair_a_true_caption_with_a_false_one_of_the_same_form(
    world: Path, scenes: dict[str, Scene]
) -> None:
    """Every relation pair of ``pretrain_negatives.json``, parsed without the generator's helpers: the caption
    holds of its image and the negative does not; and both captions of every pair share their sentence form, so
    ITM cannot tell them apart by wording (the world-v4 file of false captions alone could be)."""
    checked = 0
    for image, pairs in _load(world, "pretrain_negatives.json").items():
        assert image.startswith("images/pretrain/") and pairs
        for pair in pairs:
            assert set(pair) == {"caption", "negative"} and pair["caption"] != pair["negative"], pair
            true = _related(pair["caption"])
            if " and " in pair["negative"]:  # add_obj: the true caption with an absent object joined on
                assert pair["negative"].startswith(pair["caption"][:-1] + " and "), pair
                assert true is not None and true.holds(scenes[image]), (image, pair)
                continue
            false = _related(pair["negative"])
            assert (true is None) == (false is None), pair
            assert pair["caption"].startswith("There") == pair["negative"].startswith("There"), pair
            if true is not None and false is not None:
                assert true.holds(scenes[image]) and not false.holds(scenes[image]), (image, pair)
                checked += 1
    assert checked > 100


def test_logical_forms() -> None:
    scene = Scene(
        (
            SceneObject("circle", "red", "small", 0, 0),
            SceneObject("square", "blue", "large", 0, 2),
            SceneObject("circle", "red", "large", 2, 1),
        )
    )
    assert Related(Desc("circle", "red"), "left of", Desc("square")).holds(scene)
    assert not Related(Desc("square"), "left of", Desc("circle")).holds(scene)
    assert Related(Desc("circle", size="large"), "below", Desc("square", "blue")).holds(scene)
    assert not Related(Desc("circle", size="small"), "left of", Desc("circle", size="small")).holds(scene)
    assert CountIs(Desc(color="red"), 2).holds(scene) and not CountIs(Desc("circle"), 1).holds(scene)
    assert Listing((Desc("square"), Desc("circle", "red"), Desc("circle"))).holds(scene)
    assert not Listing((Desc("square"), Desc("square"), Desc("circle"))).holds(scene)
    assert not Exists(Desc("star")).holds(scene)


# ------------------------------------------------------------------------------------------------ chance


def test_chance_levels_by_hand(manifest: dict[str, Any]) -> None:
    records = [{"caption": ["a", "b"]}, {"caption": ["c", "d"]}, {"caption": ["e", "f"]}]
    chance = retrieval_chance(records)
    assert chance["t2i_r1"] == pytest.approx(1 / 3) and chance["i2t_r1"] == pytest.approx(2 / 6)
    assert chance["i2t_r5"] == pytest.approx(1 - 0)  # any 5 of 6 captions include one of the 2 relevant
    test = manifest["chance"]["retrieval_test"]
    assert test["t2i_r1"] == pytest.approx(1 / 16) and test["t2i_r10"] == pytest.approx(10 / 16)
    assert test["i2t_r1"] == pytest.approx(5 / 80)
    ten = ["yes"] * 10
    assert [vqa_accuracy("no", ["no"] * m + ["yes"] * (10 - m)) for m in range(5)] == pytest.approx(
        [0.0, 0.3, 0.6, 0.9, 1.0]
    )
    assert vqa_accuracy("yes", ten) == 1.0
    vqa = manifest["chance"]["vqa_test"]
    assert 0 < vqa["overall"] < 1 and 0 < vqa["yes/no"]["accuracy"] < 1
    assert manifest["chance"]["nlvr_test"]["rate"] == pytest.approx(0.5, abs=0.1)
    assert manifest["chance"]["ve_test"]["rate"] == pytest.approx(1 / 3)
    assert manifest["chance"]["text_assignment"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------ tokenizer, readers


def test_vocabulary_covers_the_world(world: Path) -> None:
    vocab = (world / "tokenizer/vocab.txt").read_text().splitlines()
    assert len(vocab) == 512
    from albef.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(world / "tokenizer")
    texts = [c for r in _load(world, "retrieval_test.json") for c in r["caption"]]
    texts += [r["question"] for r in _load(world, "vqa_test.json")] + [
        r["sentence"] for r in _load(world, "ve_test.json")
    ]
    for text in texts[:: max(1, len(texts) // 30)]:
        assert "[UNK]" not in tokenizer.tokenize(text), text


def test_official_format_readers_read_every_file(world: Path) -> None:
    data = pytest.importorskip("albef.data")
    assert len(data.read_pretrain(world / "pretrain.json")) == SIZES["small"].pretrain_images
    assert len(data.read_retrieval_train(world / "retrieval_train.json")) == 24 * 5
    assert data.read_retrieval_eval(world / "retrieval_test.json") == data.read_coco_captions(
        world / "coco_captions_test.json"
    )
    assert len(data.read_vqa_train(world / "vqa_train.json")) == len(_load(world, "vqa_train.json"))
    assert len(data.read_vqa_test(world / "vqa_test.json")) == len(_load(world, "vqa_test.json"))
    assert data.read_answer_list(world / "answer_list.json")
    v2 = data.read_vqa_v2(
        world / "vqa_v2/questions_test.json",
        world / "vqa_v2/annotations_test.json",
        image_template=V2_IMAGE_TEMPLATE,
    )
    assert all((world / r.image).is_file() for r in v2)
    for split in ("train", "dev", "test"):
        albef = data.read_nlvr(world / f"nlvr_{split}.json")
        lil = data.read_nlvr_lil(world / f"nlvr_raw/{split}.jsonl")
        assert [r.label for r in albef] == [r.label for r in lil]
        assert all(Path(a.images[0]).name == b.images[0] for a, b in zip(albef, lil, strict=True))
        ve = data.read_ve(world / f"ve_{split}.json")
        assert all((world / r.image).is_file() for r in ve)


# ------------------------------------------------------------------------------------------------ determinism, atomicity


def test_planning_is_deterministic_per_seed() -> None:
    first, again, other = plan_world("small", 3), plan_world("small", 3), plan_world("small", 4)
    assert first.files == again.files and first.texts == again.texts
    assert first.files["pretrain.json"] != other.files["pretrain.json"]
    assert first.files["scenes.json"] != other.files["scenes.json"]


def test_unknown_size_lists_valid_ones() -> None:
    with pytest.raises(SyntheticWorldError, match="small, medium"):
        plan_world("huge")


def test_ensure_world_reuses_and_regenerates(tmp_path: Path) -> None:
    root = tmp_path / "w"
    assert ensure_world(root, "small", 1) == root
    stamp = (root / "manifest.json").stat().st_mtime_ns
    ensure_world(root, "small", 1)
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(
        SyntheticWorldError, match=r"holds another synthetic world \(size small, seed 1, 64 px\)"
    ):
        ensure_world(root, "small", 2, image_size=32)  # never silently replaced by other parameters
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    ensure_world(root, "small", 2, image_size=32, force=True)
    assert world_matches(root, "small", 2, 32) and not world_matches(root, "small", 1, 64)
    with Image.open(next((root / "images/pretrain").iterdir())) as image:
        assert image.size == (32, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_ensure_world_refuses_foreign_directories(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SyntheticWorldError, match="not overwriting"):
        ensure_world(tmp_path, "small", 0)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_interrupted_generation_leaves_no_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import albef.data.synthetic.world as world_module

    calls = {"n": 0}
    real = world_module.write_image

    def flaky(*args: Any, **kwargs: Any) -> bytes:
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(world_module, "write_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        ensure_world(tmp_path / "w", "small", 0)
    assert list(tmp_path.iterdir()) == []
