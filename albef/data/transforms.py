"""Image transforms of the official ALBEF pipelines (spec §4.4) and its RandAugment variant.

Training: RandomResizedCrop (bicubic) -> RandomHorizontalFlip -> :class:`RandomAugment` (N=2, M=7) ->
ToTensor -> Normalize with the CLIP constants. Test: a square bicubic Resize -> ToTensor -> Normalize.

:class:`RandomAugment` re-implements the official ``dataset/randaugment.py`` on PIL images. Each op takes the
same argument as the official function of the same name and computes the same image, with these
differences at pixel level:

* **Affine ops** (ShearX/Y, Rotate; TranslateX/Y by whole pixels are exact). The official code warps with
  OpenCV's ``warpAffine`` (bilinear); here PIL's ``Image.transform`` (bilinear) is given the *same*
  geometry, converted from OpenCV's pixel-index convention to PIL's pixel-centre convention by
  :func:`warp_affine`. The remaining differences are interpolation details: OpenCV quantises sample
  positions to 1/32 pixel and rounds the result, PIL does neither; and along the edge of the filled area
  OpenCV blends the border pixel with the fill colour while PIL extends the border pixel by half a pixel.
  Values differ by a few grey levels on some pixels and by more only in that one-pixel seam. This is
  acceptable because the op is a random augmentation: nothing downstream can depend on those values, and
  the distribution of geometries (the part that matters for training) is identical.
* **Sharpness** overflows in the official code (an unclipped float is cast to uint8, so sharpened
  highlights can wrap round to dark values); here PIL's ``ImageEnhance.Sharpness`` clips, which is the
  behaviour the official docstring says it reproduces. The smoothing kernel, its rounding and the untouched
  one-pixel border are the same.
* **AutoContrast**: the official ``-low * scale`` negates a ``numpy.uint8``, which wraps round, so every
  channel whose minimum is above 0 becomes all 255. Here ``PIL.ImageOps.autocontrast(cutoff=0)`` is used,
  which is what the official docstring intends ("same output as PIL.ImageOps.autocontrast").
* Brightness (truncating ``v * 1.36``), Equalize and Identity are exactly the official values.

Randomness comes from a ``torch.Generator`` or, by default, torch's global RNG, which ``DataLoader``
seeds differently in each worker; the official code uses the global numpy RNG, which older PyTorch
versions copy unchanged into every worker, so that workers repeat each other's augmentations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""Normalisation used at every stage by the official code (the CLIP constants, although the ViT starts from
DeiT's ImageNet-normalised weights)."""

PRETRAIN_CROP_SCALE = (0.2, 1.0)
FINETUNE_CROP_SCALE = (0.5, 1.0)
"""RandomResizedCrop area ranges: pretraining, and retrieval/VQA/NLVR²/VE finetuning."""

MAX_LEVEL = 10
TRANSLATE_CONST = 10
"""Translation in pixels at level ``MAX_LEVEL`` (absolute, whatever the image size)."""
FILL = (128, 128, 128)
"""Colour of the area uncovered by the affine ops."""

Fill = tuple[int, int, int]
OpFn = Callable[[Image.Image, float], Image.Image]


def warp_affine(image: Image.Image, matrix: Sequence[Sequence[float]], fill: Fill = FILL) -> Image.Image:
    """Warp like OpenCV's ``cv2.warpAffine(image, matrix, size, borderValue=fill)`` (bilinear), with PIL.

    ``matrix`` is the *forward* 2x3 map in OpenCV's convention, where pixel (column x, row y) has
    coordinates (x, y): the input pixel at ``p`` lands at ``A @ p + t`` in the output. PIL instead wants
    the inverse map in coordinates where pixel centres sit at half-integers, so the map is inverted and
    shifted by half a pixel on both sides.

    Args:
        image: An RGB image.
        matrix: ``[[a, b, tx], [c, d, ty]]``, the forward map.
        fill: Colour of output pixels whose source falls outside the image.

    Returns:
        The warped image, of the same size.
    """
    (a, b, tx), (c, d, ty) = matrix
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det  # A^-1
    # source centre v = A^-1 (u - 1/2 - t) + 1/2 for output centre u
    sx, sy = 0.5 + tx, 0.5 + ty
    data = (ia, ib, 0.5 - (ia * sx + ib * sy), ic, id_, 0.5 - (ic * sx + id_ * sy))
    return image.transform(
        image.size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=fill
    )


def identity(image: Image.Image, value: float = 0.0) -> Image.Image:
    """Return the image unchanged (``value`` is ignored)."""
    return image


def auto_contrast(image: Image.Image, value: float = 0.0) -> Image.Image:
    """Stretch each channel to [0, 255] (cutoff 0); ``value`` is ignored. See the module note."""
    return ImageOps.autocontrast(image, cutoff=0)


def equalize(image: Image.Image, value: float = 0.0) -> Image.Image:
    """Equalize each channel's histogram (PIL's algorithm, as the official code); ``value`` is ignored."""
    return ImageOps.equalize(image)


def brightness(image: Image.Image, factor: float) -> Image.Image:
    """Multiply every value by ``factor``, truncating and clipping to [0, 255] (1.36 at M=7)."""
    return ImageEnhance.Brightness(image).enhance(factor)


def sharpness(image: Image.Image, factor: float) -> Image.Image:
    """Blend with a 3x3 smoothed copy: ``smooth + factor * (image - smooth)``; the border is unchanged."""
    return ImageEnhance.Sharpness(image).enhance(factor)


def shear_x(image: Image.Image, factor: float, fill: Fill = FILL) -> Image.Image:
    """Shear along x about the top row: the pixel at (x, y) moves to (x + factor * y, y)."""
    return warp_affine(image, [[1.0, factor, 0.0], [0.0, 1.0, 0.0]], fill)


def shear_y(image: Image.Image, factor: float, fill: Fill = FILL) -> Image.Image:
    """Shear along y about the left column: the pixel at (x, y) moves to (x, y + factor * x)."""
    return warp_affine(image, [[1.0, 0.0, 0.0], [factor, 1.0, 0.0]], fill)


def translate_x(image: Image.Image, offset: float, fill: Fill = FILL) -> Image.Image:
    """Shift the content **left** by ``offset`` pixels (right if negative), as the official function does."""
    return warp_affine(image, [[1.0, 0.0, -offset], [0.0, 1.0, 0.0]], fill)


def translate_y(image: Image.Image, offset: float, fill: Fill = FILL) -> Image.Image:
    """Shift the content **up** by ``offset`` pixels (down if negative), as the official function does."""
    return warp_affine(image, [[1.0, 0.0, 0.0], [0.0, 1.0, -offset]], fill)


def rotation_matrix(width: int, height: int, degrees: float) -> list[list[float]]:
    """OpenCV's ``getRotationMatrix2D((width / 2, height / 2), degrees, 1)``: counter-clockwise on screen.

    The centre ``(W/2, H/2)`` is in pixel-index coordinates, half a pixel right of and below the true centre
    ``((W-1)/2, (H-1)/2)``; the official code rotates about that point, and so does :func:`rotate`.
    """
    cx, cy = width / 2, height / 2
    alpha, beta = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return [
        [alpha, beta, (1 - alpha) * cx - beta * cy],
        [-beta, alpha, beta * cx + (1 - alpha) * cy],
    ]


def rotate(image: Image.Image, degrees: float, fill: Fill = FILL) -> Image.Image:
    """Rotate counter-clockwise by ``degrees`` about ``(W/2, H/2)`` (see :func:`rotation_matrix`)."""
    return warp_affine(image, rotation_matrix(image.width, image.height, degrees), fill)


_OPS: dict[str, OpFn] = {
    "Identity": identity,
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Brightness": brightness,
    "Sharpness": sharpness,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
    "Rotate": rotate,
}
AUGMENT_OPS: tuple[str, ...] = tuple(_OPS)
"""The official op pool. Colour, Contrast, Solarize, Posterize and Cutout are not in it."""

SIGNED_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})
"""Ops whose argument gets a random sign; Brightness and Sharpness always enhance."""


def op_magnitude(name: str, level: float) -> float:
    """The unsigned argument of op ``name`` at ``level`` (the official ``*_level_to_args``).

    At level 7: Brightness/Sharpness factor 1.36, shear 0.21, translation 7 pixels, rotation 21 degrees;
    0 for the ops without an argument.

    Args:
        name: One of :data:`AUGMENT_OPS`.
        level: Magnitude in [0, MAX_LEVEL].

    Returns:
        The argument before the random sign.
    """
    if name not in _OPS:
        raise KeyError(f"unknown augmentation op {name!r}; valid: {', '.join(AUGMENT_OPS)}")
    fraction = level / MAX_LEVEL
    if name in ("Brightness", "Sharpness"):
        return fraction * 1.8 + 0.1
    if name in ("ShearX", "ShearY"):
        return fraction * 0.3
    if name in ("TranslateX", "TranslateY"):
        return fraction * float(TRANSLATE_CONST)
    if name == "Rotate":
        return fraction * 30
    return 0.0


def apply_op(image: Image.Image, name: str, value: float) -> Image.Image:
    """Apply op ``name`` with its (signed) argument ``value`` to an RGB image."""
    return _OPS[name](image, value)


class RandomAugment:
    """The official RandAugment variant: ``n`` ops drawn with replacement, each applied with probability 0.5.

    The random calls follow the official order: first the ``n`` op indices, then for each op a uniform draw
    deciding whether it applies and, if it applies and takes a signed argument, one more draw for the sign
    (negative with probability 0.5).

    Args:
        n: Number of ops drawn per image.
        m: Magnitude level, in [0, ``MAX_LEVEL``].
        ops: The pool to draw from; names from :data:`AUGMENT_OPS`.
        prob: Probability that each drawn op is applied.
        generator: Source of randomness. ``None`` (the default, and the right choice inside a ``DataLoader``)
            uses torch's global RNG, which each worker seeds differently; a generator passed here is copied
            into every worker with the same state.
    """

    def __init__(
        self,
        n: int = 2,
        m: float = 7,
        ops: Sequence[str] = AUGMENT_OPS,
        prob: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        unknown = [name for name in ops if name not in _OPS]
        if unknown or not ops:
            raise ValueError(f"ops must be a non-empty subset of {list(AUGMENT_OPS)}, got unknown {unknown}")
        if n < 0 or not 0 <= m <= MAX_LEVEL or not 0.0 <= prob <= 1.0:
            raise ValueError(f"need n >= 0, 0 <= m <= {MAX_LEVEL} and 0 <= prob <= 1; got {n}, {m}, {prob}")
        self.n, self.m, self.ops, self.prob = n, m, tuple(ops), prob
        self.generator = generator

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator).item())

    def sample_ops(self) -> list[tuple[str, float]]:
        """Draw the ops for one image.

        Returns:
            The ops that apply, in order, each with its signed argument.
        """
        picks = torch.randint(len(self.ops), (self.n,), generator=self.generator).tolist()
        chosen: list[tuple[str, float]] = []
        for index in picks:
            name = self.ops[index]
            if self._uniform() > self.prob:
                continue
            value = op_magnitude(name, self.m)
            if name in SIGNED_OPS and self._uniform() < 0.5:
                value = -value
            chosen.append((name, value))
        return chosen

    def __call__(self, image: Image.Image) -> Image.Image:
        """Augment one RGB image; returns a PIL image of the same size."""
        for name, value in self.sample_ops():
            image = apply_op(image, name, value)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, m={self.m}, ops={list(self.ops)}, prob={self.prob})"


def _to_normalized_tensor() -> list[T.ToTensor | T.Normalize]:
    return [T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)]


def build_train_transform(
    image_res: int, scale: tuple[float, float] = FINETUNE_CROP_SCALE, randaugment: bool = True
) -> T.Compose:
    """The official training transform: random crop, flip, RandomAugment(2, 7), CLIP normalisation.

    Args:
        image_res: Output side in pixels (256 for pretraining, 384 for finetuning).
        scale: Area range of the random crop: :data:`PRETRAIN_CROP_SCALE` or :data:`FINETUNE_CROP_SCALE`.
        randaugment: Include :class:`RandomAugment` (the official pipelines always do).

    Returns:
        A transform from an RGB PIL image to a (3, image_res, image_res) float32 tensor.
    """
    steps: list[object] = [
        T.RandomResizedCrop(image_res, scale=scale, interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
    ]
    if randaugment:
        steps.append(RandomAugment(2, 7))
    return T.Compose([*steps, *_to_normalized_tensor()])


def build_grounding_train_transform(image_res: int) -> T.Compose:
    """The official grounding training transform: a square bicubic resize (no crop, which could cut the
    referred object out), flip, RandomAugment(2, 7), CLIP normalisation."""
    steps: list[object] = [
        T.Resize((image_res, image_res), interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        RandomAugment(2, 7),
    ]
    return T.Compose([*steps, *_to_normalized_tensor()])


def build_test_transform(image_res: int) -> T.Compose:
    """The official evaluation transform: a square bicubic resize (aspect ratio not kept), no crop.

    Args:
        image_res: Output side in pixels.

    Returns:
        A transform from an RGB PIL image to a (3, image_res, image_res) float32 tensor.
    """
    resize = T.Resize((image_res, image_res), interpolation=InterpolationMode.BICUBIC)
    return T.Compose([resize, *_to_normalized_tensor()])
