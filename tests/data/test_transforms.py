"""Tests for albef.data.transforms: each RandomAugment op on hand-made images, sampling, and the pipelines.

Expected values are worked out by hand from the official definitions (spec §4.4), not from recorded runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode

from albef.data import transforms as tr
from albef.data.transforms import (
    AUGMENT_OPS,
    CLIP_MEAN,
    CLIP_STD,
    FILL,
    FINETUNE_CROP_SCALE,
    PRETRAIN_CROP_SCALE,
    RandomAugment,
    build_test_transform,
    build_train_transform,
    op_magnitude,
)


def rgb(array: np.ndarray) -> Image.Image:
    """A PIL RGB image from an (H, W) or (H, W, 3) uint8 array."""
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array.astype(np.uint8), "RGB")


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


def random_image(h: int, w: int, low: int = 0, high: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (h, w, 3), dtype=np.uint8)


def test_op_pool_and_magnitudes_at_level_7() -> None:
    assert AUGMENT_OPS == (
        "Identity",
        "AutoContrast",
        "Equalize",
        "Brightness",
        "Sharpness",
        "ShearX",
        "ShearY",
        "TranslateX",
        "TranslateY",
        "Rotate",
    )
    expected = {"Brightness": 1.36, "Sharpness": 1.36, "ShearX": 0.21, "ShearY": 0.21}
    expected |= {"TranslateX": 7.0, "TranslateY": 7.0, "Rotate": 21.0}
    for name in AUGMENT_OPS:
        assert op_magnitude(name, 7) == pytest.approx(expected.get(name, 0.0), abs=1e-12)
    assert {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"} == tr.SIGNED_OPS
    assert FILL == (128, 128, 128)
    with pytest.raises(KeyError, match="Solarize"):
        op_magnitude("Solarize", 7)


def test_identity_returns_the_image() -> None:
    image = rgb(random_image(4, 5))
    assert tr.apply_op(image, "Identity", 0.0) is image


def test_translate_x_moves_a_pixel_by_whole_columns_and_fills() -> None:
    a = np.zeros((8, 20), np.uint8)
    a[3, 10] = 255
    left = arr(tr.translate_x(rgb(a), 7.0))  # official sign: +offset moves the content left
    expected = np.zeros((8, 20), np.int64)
    expected[3, 3] = 255
    expected[:, 13:] = 128  # their source column x + 7 is past the right edge
    assert (left == expected[..., None]).all()
    right = arr(tr.translate_x(rgb(a), -7.0))
    expected = np.zeros((8, 20), np.int64)
    expected[3, 17] = 255
    expected[:, :7] = 128
    assert (right == expected[..., None]).all()


def test_translate_y_moves_a_pixel_by_whole_rows() -> None:
    a = np.zeros((20, 6), np.uint8)
    a[12, 2] = 255
    out = arr(tr.translate_y(rgb(a), 7.0))
    expected = np.zeros((20, 6), np.int64)
    expected[5, 2] = 255
    expected[13:, :] = 128
    assert (out == expected[..., None]).all()


def test_shear_x_maps_x_to_x_plus_factor_y() -> None:
    a = np.zeros((10, 12), np.uint8)
    a[4, 2] = 255
    out = arr(tr.shear_x(rgb(a), 0.5, fill=(0, 0, 0)))
    expected = np.zeros((10, 12), np.int64)
    expected[4, 4] = 255  # (x, y) = (2, 4) -> (2 + 0.5 * 4, 4)
    assert (out == expected[..., None]).all()
    # The official magnitude: the top row stays, the bottom-left corner comes from outside the image.
    image = random_image(16, 16)
    sheared = arr(tr.shear_x(rgb(image), 0.21))
    assert (sheared[0] == image[0]).all()
    assert (sheared[15, :3] == 128).all()  # source x = x - 0.21 * 15 < -0.5


def test_shear_y_maps_y_to_y_plus_factor_x() -> None:
    a = np.zeros((12, 10), np.uint8)
    a[2, 4] = 255
    out = arr(tr.shear_y(rgb(a), -0.5, fill=(0, 0, 0)))
    expected = np.zeros((12, 10), np.int64)
    expected[0, 4] = 255  # (x, y) = (4, 2) -> (4, 2 - 0.5 * 4)
    assert (out == expected[..., None]).all()


def test_rotate_90_follows_the_official_centre() -> None:
    # About (W/2, H/2) in pixel indices, as cv2.getRotationMatrix2D: (x, y) -> (y, W - x), one row below rot90.
    image = random_image(6, 6)
    out = arr(tr.rotate(rgb(image), 90.0))
    expected = np.concatenate([np.full((1, 6, 3), 128), np.rot90(image)[:-1].astype(np.int64)])
    assert np.abs(out - expected).max() <= 1  # cos(90°) ~ 6e-17 and PIL truncates the interpolated value
    assert (arr(tr.rotate(rgb(image), 0.0)) == image).all()


def test_rotate_21_degrees_moves_a_block_counter_clockwise() -> None:
    a = np.zeros((32, 32), np.uint8)
    a[15:18, 21:24] = 255  # a 3x3 block centred on (x, y) = (22, 16); the centre of rotation is (16, 16)
    out = arr(tr.rotate(rgb(a), 21.0, fill=(0, 0, 0)))[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:32, 0:32]
    centroid = ((out * xs).sum() / out.sum(), (out * ys).sum() / out.sum())
    angle = np.radians(21.0)
    expected = (16 + 6 * np.cos(angle), 16 - 6 * np.sin(angle))  # (21.60, 13.85): up and to the left
    assert centroid == pytest.approx(expected, abs=0.1)
    constant = arr(tr.rotate(rgb(np.full((32, 32), 200, np.uint8)), 21.0))
    assert (
        (constant[16, 16] == 200).all() and (constant[0, 0] == 128).all() and (constant[31, 31] == 128).all()
    )


def test_brightness_truncates_v_times_1_36_like_the_official_table() -> None:
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = arr(tr.brightness(rgb(image), op_magnitude("Brightness", 7)))[..., 0]
    expected = np.clip(np.floor(np.arange(256, dtype=np.float32) * np.float32(1.36)), 0, 255).reshape(16, 16)
    assert (out == expected).all()
    assert arr(tr.brightness(rgb(np.full((3, 3), 102, np.uint8)), 1.36))[0, 0, 0] == 138  # 138.72
    assert arr(tr.brightness(rgb(np.full((3, 3), 200, np.uint8)), 1.36))[0, 0, 0] == 255  # clipped


def test_sharpness_is_identity_on_a_constant_image() -> None:
    image = np.full((7, 9), 90, np.uint8)
    assert (arr(tr.sharpness(rgb(image), 1.36)) == 90).all()


def test_sharpness_matches_the_official_formula() -> None:
    image = random_image(9, 11, 60, 190)
    out = arr(tr.sharpness(rgb(image), 1.36))
    f = image.astype(np.float64)
    kernel = np.ones((3, 3))
    kernel[1, 1] = 5
    smooth = sum(kernel[dy, dx] * f[dy : dy + 7, dx : dx + 9] for dy in range(3) for dx in range(3)) / 13
    smooth = np.floor(smooth + 0.5).astype(np.float32)  # 3x3 filter, rounded (k/13 never ties)
    inner = image[1:-1, 1:-1].astype(np.float32)
    expected = image.astype(np.int64)
    expected[1:-1, 1:-1] = np.clip(np.floor(smooth + np.float32(1.36) * (inner - smooth)), 0, 255)
    assert (out == expected).all()  # the one-pixel border is left unchanged, as officially


def test_auto_contrast_stretches_each_channel() -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = [[50, 100], [120, 150]]
    image[..., 1] = 77  # a constant channel is left alone
    image[..., 2] = [[0, 10], [20, 40]]
    out = arr(tr.auto_contrast(rgb(image)))
    assert out[..., 0].tolist() == [[0, 127], [178, 255]]  # int((v - 50) * 255 / 100)
    assert (out[..., 1] == 77).all()
    assert out[..., 2].tolist() == [[0, 63], [127, 255]]  # int(v * 255 / 40)


def test_equalize_follows_pils_histogram_lut() -> None:
    values = np.array([10] * 300 + [20] * 300 + [30] * 100, np.uint8).reshape(28, 25)
    out = arr(tr.equalize(rgb(values)))[..., 0]
    # step = (300 + 300) // 255 = 2; lut[v] = (step // 2 + #pixels below v) // step, clipped to 255
    lut = {10: 0, 20: 150, 30: 255}
    assert (out == np.vectorize(lut.get)(values)).all()


def test_random_augment_is_seeded_and_reproducible() -> None:
    image = rgb(random_image(24, 24))
    runs = []
    for _ in range(2):
        augment = RandomAugment(2, 7, generator=torch.Generator().manual_seed(5))
        runs.append([arr(augment(image)) for _ in range(8)])
    assert all((a == b).all() for a, b in zip(*runs, strict=True))
    augment = RandomAugment(2, 7)
    torch.manual_seed(11)
    first = [augment.sample_ops() for _ in range(20)]
    torch.manual_seed(11)
    assert [augment.sample_ops() for _ in range(20)] == first


def test_random_augment_sampling_statistics() -> None:
    augment = RandomAugment(2, 7, generator=torch.Generator().manual_seed(0))
    draws = [augment.sample_ops() for _ in range(3000)]
    applied = [op for ops in draws for op in ops]
    assert 0.45 < len(applied) / (2 * len(draws)) < 0.55  # each of the 2 ops applies with p = 0.5
    assert {name for name, _ in applied} == set(AUGMENT_OPS)
    for name, value in applied:
        assert abs(value) == pytest.approx(op_magnitude(name, 7))
        assert value >= 0 or name in tr.SIGNED_OPS
    rotations = [value for name, value in applied if name == "Rotate"]
    assert 0.35 < sum(v > 0 for v in rotations) / len(rotations) < 0.65
    assert RandomAugment(0, 7)(rgb(random_image(4, 4))).size == (4, 4)
    with pytest.raises(ValueError):
        RandomAugment(2, 7, ops=["Solarize"])


class _OpsDataset(Dataset[str]):
    def __init__(self) -> None:
        self.augment = RandomAugment(2, 7)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> str:
        return repr(self.augment.sample_ops())


def test_dataloader_workers_draw_different_and_reproducible_ops() -> None:
    def run() -> list[str]:
        loader = DataLoader(
            _OpsDataset(), batch_size=4, num_workers=2, generator=torch.Generator().manual_seed(3)
        )
        return [item for batch in loader for item in batch]

    first = run()
    assert run() == first
    assert first[:4] != first[4:]  # batch 0 from worker 0, batch 1 from worker 1: not copies


def test_train_transform_pipeline_and_output() -> None:
    transform = build_train_transform(32, scale=PRETRAIN_CROP_SCALE)
    crop, flip, augment, _, normalize = transform.transforms
    assert crop.size == (32, 32) and crop.scale == PRETRAIN_CROP_SCALE
    assert crop.interpolation == InterpolationMode.BICUBIC and flip.p == 0.5
    assert isinstance(augment, RandomAugment) and (augment.n, augment.m) == (2, 7)
    assert normalize.mean == CLIP_MEAN and normalize.std == CLIP_STD
    assert FINETUNE_CROP_SCALE == (0.5, 1.0) and build_train_transform(32).transforms[0].scale == (0.5, 1.0)
    assert not any(
        isinstance(t, RandomAugment) for t in build_train_transform(32, randaugment=False).transforms
    )
    image = rgb(random_image(50, 70))
    torch.manual_seed(0)
    out = transform(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    torch.manual_seed(0)
    assert torch.equal(transform(image), out)


def test_test_transform_normalises_a_constant_image_exactly() -> None:
    transform = build_test_transform(16)
    image = Image.new("RGB", (40, 20), (37, 128, 200))  # not square: the resize ignores the aspect ratio
    out = transform(image)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    values = torch.tensor([37, 128, 200], dtype=torch.float32) / 255
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    expected = ((values - mean) / std)[:, None, None].expand(3, 16, 16)
    assert torch.equal(out, expected)
