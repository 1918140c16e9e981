"""Datasets, collators and loaders: values, determinism per (seed, epoch, index), resume, skip policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from albef.data.collate import CaptionCollator, RetrievalCollator, TextPolicy, VQACollator, collate_images
from albef.data.datasets import (
    PretrainDataset,
    Refilled,
    RetrievalEvalImages,
    RetrievalTrainDataset,
    VQADataset,
    retrieval_eval_texts,
)
from albef.data.errors import DataError
from albef.data.images import SkippedImage
from albef.data.loaders import ResumableSampler, build_loader, set_epoch
from albef.data.records import PretrainRecord, RetrievalEvalSet, RetrievalTrainRecord, VQARecord
from albef.data.tokenizer import load_tokenizer
from albef.data.transforms import build_test_transform, build_train_transform
from albef.data.wordpiece import train_wordpiece

WORDS = [
    "a",
    "red",
    "blue",
    "green",
    "circle",
    "square",
    "star",
    "left",
    "of",
    "the",
    "right",
    "small",
    "large",
    "there",
    "is",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("vocab")
    train_wordpiece([" ".join(WORDS)] * 4, out, vocab_size=128)
    return load_tokenizer(str(out))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.new("RGB", (40, 30), (40 * i, 255 - 40 * i, 7 * i)).save(root / f"im{i}.png")
    return root


def test_test_transform_values_and_caption_preprocessing(image_dir: Path) -> None:
    records = [PretrainRecord(f"im{i}.png", ("A Red, Circle!",)) for i in range(3)]
    ds = PretrainDataset(records, image_dir, build_test_transform(16), source="pre.json")
    sample = ds[1]
    assert sample.caption == "a red circle"
    assert sample.image.shape == (3, 16, 16)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    expected = (torch.tensor([40, 215, 7]) / 255 - mean) / std
    torch.testing.assert_close(sample.image[:, 5, 5], expected)


def test_per_sample_randomness_depends_on_seed_epoch_index_only(image_dir: Path) -> None:
    records = [PretrainRecord(f"im{i}.png", ("one", "two", "three", "four")) for i in range(6)]
    ds = PretrainDataset(records, image_dir, build_train_transform(16), source="pre.json", seed=3)
    first = [ds[i] for i in range(6)]
    torch.manual_seed(999)  # the global RNG must not matter
    again = [ds[i] for i in reversed(range(6))][::-1]
    for a, b in zip(first, again, strict=True):
        assert a.caption == b.caption and torch.equal(a.image, b.image)
    ds.set_epoch(1)
    other = [ds[i] for i in range(6)]
    assert any(not torch.equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    before = torch.get_rng_state()
    ds[0]
    assert torch.equal(before, torch.get_rng_state())  # the caller's RNG stream is untouched


def test_a_sample_is_the_transform_drawn_from_the_cpu_generator_seeded_with_its_sample_seed(
    image_dir: Path,
) -> None:
    # The dataset seeds only the CPU generator (not CUDA's, whose lazy seeding is slow on a CUDA build);
    # the image must be what torch.manual_seed(sample_seed(...)) followed by the transform gives.
    from albef.data.datasets import sample_seed

    transform = build_train_transform(16)
    records = [PretrainRecord(f"im{i}.png", ("one",)) for i in range(3)]
    ds = PretrainDataset(records, image_dir, transform, source="pre.json", seed=7)
    ds.set_epoch(2)
    for i in range(3):
        torch.manual_seed(sample_seed(7, 2, i))
        expected = transform(Image.open(image_dir / f"im{i}.png").convert("RGB"))
        torch.testing.assert_close(ds[i].image, expected, rtol=0, atol=0)


def test_missing_image_names_file_record_and_path(image_dir: Path) -> None:
    records = [PretrainRecord("im0.png", ("x",)), PretrainRecord("nope.png", ("y",))]
    ds = PretrainDataset(records, image_dir, build_test_transform(8), source="ann/pre.json")
    with pytest.raises(DataError) as err:
        ds[1]
    msg = str(err.value)
    assert "nope.png" in msg and "ann/pre.json" in msg and "1" in msg


def test_skip_policy_drops_and_reports_bad_images(image_dir: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    records = [PretrainRecord("im0.png", ("red",)), PretrainRecord("gone.png", ("blue",))]
    ds = PretrainDataset(records, image_dir, build_test_transform(8), source="pre.json", bad_images="skip")
    assert isinstance(ds[1], SkippedImage)
    batch = CaptionCollator(tokenizer, TextPolicy(max_length=25))([ds[0], ds[1]])
    assert batch.image.shape == (1, 3, 8, 8) and len(batch.skipped) == 1
    assert batch.skipped[0].index == 1 and batch.skipped[0].path.endswith("gone.png")
    assert batch.skipped[0].reason == "file not found" and "pre.json" in str(batch.skipped[0])


def test_retrieval_collate_tokenises_without_sep(image_dir: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    records = [
        RetrievalTrainRecord(f"im{i}.png", "a red circle left of the star", f"id{i // 2}", i // 2)
        for i in range(4)
    ]
    ds = RetrievalTrainDataset(records, image_dir, build_test_transform(8), source="train.json")
    batch = RetrievalCollator(tokenizer)([ds[i] for i in range(4)])
    assert batch.idx.tolist() == [0, 0, 1, 1]
    ids = batch.text.input_ids
    assert (ids[:, 0] == tokenizer.cls_token_id).all()
    assert not (ids == tokenizer.sep_token_id).any()
    assert batch.text.attention_mask.sum().item() == ids.numel()  # equal lengths: no padding


def test_eval_split_images_and_texts(image_dir: Path) -> None:
    split = RetrievalEvalSet.from_groups([("im0.png", ["A Star.", "Red star"]), ("im1.png", ["Blue-circle"])])
    ds = RetrievalEvalImages(split, image_dir, build_test_transform(8), source="test.json")
    batch = collate_images([ds[0], ds[1]])
    assert batch.index.tolist() == [0, 1] and batch.image.shape == (2, 3, 8, 8)
    assert retrieval_eval_texts(split) == ["a star", "red star", "blue circle"]


def test_vqa_collate_flattens_answers_and_picks_roots(image_dir: Path, tokenizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    records = [
        VQARecord(7, "What color is the star?", "im0.png", "vqa", ("red", "blue"), (0.7, 0.3)),
        VQARecord(None, "Is there a circle?", "im1.png", "vg", ("red",), (0.5,)),
    ]
    ds = VQADataset(records, {"vqa": image_dir, "vg": image_dir}, build_test_transform(8), source="vqa.json")
    batch = VQACollator(tokenizer, TextPolicy(max_length=25))([ds[0], ds[1]])
    assert batch.k == [2, 1] and batch.question_id.tolist() == [7, -1]
    torch.testing.assert_close(batch.weights, torch.tensor([0.7, 0.3, 0.5]))
    assert batch.answer is not None and batch.answer.input_ids.shape[0] == 3
    first = batch.answer.input_ids[0]
    assert first[0] == tokenizer.cls_token_id and tokenizer.sep_token_id in first.tolist()
    missing_root = VQADataset(records, {"vqa": image_dir}, build_test_transform(8), source="vqa.json")
    with pytest.raises(DataError, match="field 'dataset'"):
        missing_root[1]


def test_sampler_shards_ranks_and_resumes_mid_epoch() -> None:
    data = list(range(10))
    full = list(ResumableSampler(data, shuffle=True, seed=1))
    assert sorted(full) == data
    shards = [list(ResumableSampler(data, rank=r, world_size=2, shuffle=True, seed=1)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == data and not set(shards[0]) & set(shards[1])
    resumed = ResumableSampler(data, shuffle=True, seed=1)
    resumed.set_start(4)
    assert list(resumed) == full[4:] and len(resumed) == 6


def test_loader_resume_gives_the_same_batches(image_dir: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    records = [PretrainRecord(f"im{i}.png", ("red circle", "blue star")) for i in range(6)]
    ds = PretrainDataset(records, image_dir, build_train_transform(8), source="pre.json", seed=5)
    loader = build_loader(ds, 2, CaptionCollator(tokenizer), train=True, seed=5)
    set_epoch(loader, 2)
    uninterrupted = list(loader)
    set_epoch(loader, 2, start_batch=1)
    resumed = list(loader)
    assert len(uninterrupted) == 3 and len(resumed) == 2
    for a, b in zip(uninterrupted[1:], resumed, strict=True):
        assert torch.equal(a.image, b.image) and torch.equal(a.text.input_ids, b.text.input_ids)


def test_training_refills_a_skipped_sample_with_the_next_record_that_loads(
    image_dir: Path,
    tokenizer,  # type: ignore[no-untyped-def]
) -> None:
    records = [PretrainRecord("im0.png", ("red",)), PretrainRecord("gone.png", ("blue",)),
               PretrainRecord("gone2.png", ("green",)), PretrainRecord("im1.png", ("star",))]  # fmt: skip
    ds = PretrainDataset(records, image_dir, build_test_transform(8), source="pre.json", bad_images="skip")
    ds.refill = True
    refilled = ds[1]
    assert isinstance(refilled, Refilled)
    assert [s.path.rsplit("/", 1)[-1] for s in refilled.skipped] == ["gone.png", "gone2.png"]
    assert torch.equal(refilled.sample.image, ds[3].image)  # record 3, with its own randomness
    assert refilled.sample.caption == ds[3].caption
    batch = CaptionCollator(tokenizer, TextPolicy(max_length=25))([ds[0], refilled])
    assert batch.image.shape == (2, 3, 8, 8)  # the batch keeps its size
    assert [s.index for s in batch.skipped] == [1, 2]


def test_build_loader_turns_refill_on_for_training_only(image_dir: Path) -> None:
    from torch.utils.data import ConcatDataset

    def dataset() -> PretrainDataset:
        return PretrainDataset(
            [PretrainRecord("im0.png", ("x",))] * 4, image_dir, build_test_transform(8), source="p"
        )

    train = ConcatDataset([dataset(), dataset()])
    build_loader(train, 2, list, train=True)
    assert all(part.refill for part in train.datasets)  # type: ignore[attr-defined]
    evaluation = dataset()
    build_loader(evaluation, 2, list, train=False)
    assert not evaluation.refill


def test_every_image_unreadable_is_a_data_error(image_dir: Path) -> None:
    records = [PretrainRecord("gone.png", ("x",)), PretrainRecord("gone2.png", ("y",))]
    ds = PretrainDataset(records, image_dir, build_test_transform(8), source="pre.json", bad_images="skip")
    ds.refill = True
    with pytest.raises(DataError, match=r"pre\.json: no image of its 2 records could be read; the first: "):
        ds[0]
