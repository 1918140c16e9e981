"""Tests for albef.data.images: error messages that locate the image, and the opt-in skip policy."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from albef.data.errors import DataError
from albef.data.images import BadImagePolicy, SkippedImage, SkippedImages, load_image


def write_png(path: Path, mode: str = "RGB", size: tuple[int, int] = (16, 12)) -> Path:
    rng = np.random.default_rng(0)  # noisy content, so the compressed data spans many bytes
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8).squeeze()
    Image.fromarray(array, mode).save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_load_image_returns_a_detached_rgb_image(tmp_path: Path, mode: str) -> None:
    image = load_image(write_png(tmp_path / "a.png", mode))
    assert image.mode == "RGB" and image.size == (16, 12)


def test_missing_file_names_image_annotation_file_and_record(tmp_path: Path) -> None:
    image = tmp_path / "img" / "missing.jpg"
    with pytest.raises(DataError) as info:
        load_image(image, source="data/coco_train.json", index=17)
    assert str(info.value) == f"data/coco_train.json: record 17: image {image}: file not found"
    assert (info.value.path, info.value.index) == ("data/coco_train.json", 17)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_missing_file_without_source_names_the_image(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.png: file not found"):
        load_image(tmp_path / "missing.png")


def test_truncated_png_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = write_png(tmp_path / "cut.png", size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        load_image(path, source="ann.json", index=3)
    message = str(info.value)
    assert message.startswith(f"ann.json: record 3: image {path}: corrupt or truncated image (")


def test_garbage_file_is_reported_as_unidentified(tmp_path: Path) -> None:
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"this is not an image at all")
    with pytest.raises(DataError, match="not an image PIL can identify"):
        load_image(path, source="ann.json", index=0)


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        load_image(tmp_path)


def test_error_policy_raises(tmp_path: Path) -> None:
    policy = BadImagePolicy()
    assert policy.mode == "error"
    assert isinstance(policy.load(write_png(tmp_path / "ok.png")), Image.Image)
    with pytest.raises(DataError, match="record 5"):
        policy.load(tmp_path / "missing.png", source="ann.json", index=5)
    with pytest.raises(ValueError, match="bad_images"):
        BadImagePolicy("ignore")  # type: ignore[arg-type]


def test_skip_policy_records_logs_counts_and_summarises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = BadImagePolicy("skip")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    good = policy.load(write_png(tmp_path / "ok.png"), source="ann.json", index=0)
    assert isinstance(good, Image.Image)
    with caplog.at_level(logging.WARNING, logger="albef.data.images"):
        results = [
            policy.load(tmp_path / "missing.png", source="ann.json", index=1),
            policy.load(corrupt, source="ann.json", index=2),
            policy.load(tmp_path / "missing.png", source="ann.json", index=1),
        ]
    assert all(isinstance(r, SkippedImage) for r in results)
    assert len(caplog.records) == 3 and "ann.json: record 1: image" in caplog.records[0].getMessage()
    first = results[0]
    assert isinstance(first, SkippedImage)
    assert (first.path, first.source, first.index, first.reason) == (
        str(tmp_path / "missing.png"),
        "ann.json",
        1,
        "file not found",
    )
    # Records cross process boundaries with the batches; the run-level counter lives in the main process.
    skipped = SkippedImages()
    assert skipped.summary() == "no images skipped"
    skipped.extend(pickle.loads(pickle.dumps(results)))
    assert skipped.count == len(skipped) == 3
    lines = skipped.summary(limit=2).splitlines()
    assert lines[0] == "skipped 3 unreadable images (2 distinct files; data.bad_images=skip):"
    assert lines[1] == f"  ann.json: record 1: image {tmp_path / 'missing.png'}: file not found"
    assert lines[2].startswith(f"  ann.json: record 2: image {corrupt}: ")
    assert lines[3] == "  ... and 1 more"


def test_single_skip_summary_wording() -> None:
    skipped = SkippedImages()
    skipped.add(SkippedImage("x.jpg", None, None, "file not found"))
    assert skipped.summary() == (
        "skipped 1 unreadable image (1 distinct file; data.bad_images=skip):\n  x.jpg: file not found"
    )
    assert [str(item) for item in skipped] == ["x.jpg: file not found"]
