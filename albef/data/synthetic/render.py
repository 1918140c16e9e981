"""Drawing scenes with PIL, and writing them as byte-reproducible PNG/JPEG files.

The background is a muted grey tone with a smooth random texture; shapes are drawn at twice the target
resolution and box-filtered down (anti-aliasing), then per-pixel noise is added. All randomness comes from
the ``numpy.random.Generator`` passed in, and files carry no metadata, so equal inputs give equal bytes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from albef.data.synthetic.scene import GRID, Scene, SceneObject

RGB = tuple[int, int, int]

COLOR_RGB: dict[str, RGB] = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (45, 85, 225),
    "yellow": (240, 215, 35),
    "purple": (145, 60, 195),
    "orange": (250, 135, 25),
    "cyan": (40, 205, 215),
    "white": (245, 245, 245),
}
BACKGROUND_TONES: tuple[RGB, ...] = ((96, 96, 96), (118, 110, 102), (98, 106, 118), (84, 92, 84))
SIZE_RADIUS: dict[str, float] = {"small": 0.24, "large": 0.38}
"""Object radius as a fraction of the grid cell."""
JITTER = 0.1
"""Largest offset of an object's centre from its cell centre, as a fraction of the cell."""
TEXTURE_AMPLITUDE = 22.0
TEXTURE_TINT = 6.0
PIXEL_NOISE_STD = 6.0
COLOR_JITTER = 12
SUPERSAMPLE = 2


def _background(size: int, tone: RGB, rng: np.random.Generator) -> Image.Image:
    """A smooth random texture around ``tone``: a coarse random field upsampled bilinearly."""
    # Mostly brightness variation with a little tint, so no blob looks like a coloured object.
    light = rng.uniform(-1.0, 1.0, size=(5, 5, 1)) * TEXTURE_AMPLITUDE
    tint = rng.uniform(-1.0, 1.0, size=(5, 5, 3)) * TEXTURE_TINT
    coarse = light + tint + np.asarray(tone, dtype=np.float64)
    small = Image.fromarray(np.clip(coarse, 0, 255).round().astype(np.uint8), "RGB")
    return small.resize((size, size), Image.Resampling.BILINEAR)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else 0.45 * r
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    raise ValueError(f"no polygon for shape {shape!r}")


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, canvas: int, fill: RGB) -> None:
    cell = canvas / GRID
    cx = (obj.col + 0.5 + JITTER * obj.dx) * cell
    cy = (obj.row + 0.5 + JITTER * obj.dy) * cell
    r = SIZE_RADIUS[obj.size] * cell
    if obj.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif obj.shape == "square":
        h = 0.82 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif obj.shape == "cross":
        w = 0.34 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r), fill=fill)


def render_scene(scene: Scene, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw a scene.

    Args:
        scene: What to draw.
        image_size: Side of the square output image in pixels.
        rng: Random stream for the texture, colour jitter and pixel noise.

    Returns:
        An RGB image of ``image_size`` × ``image_size``.
    """
    canvas = image_size * SUPERSAMPLE
    image = _background(canvas, BACKGROUND_TONES[scene.background], rng)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
        fill = tuple(int(v) for v in np.clip(np.asarray(COLOR_RGB[obj.color]) + jitter, 0, 255))
        _draw_object(draw, obj, canvas, (fill[0], fill[1], fill[2]))
    image = image.resize((image_size, image_size), Image.Resampling.BOX)
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(
        0.0, PIXEL_NOISE_STD, size=(image_size, image_size, 3)
    )
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")


def encode_image(image: Image.Image, fmt: str) -> bytes:
    """Encode without metadata and with fixed parameters, so equal pixels give equal bytes.

    Args:
        image: The image.
        fmt: ``"png"`` or ``"jpeg"`` (quality 92, 4:4:4, baseline).

    Returns:
        The encoded file content.
    """
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=6, optimize=False)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=92, subsampling=0, optimize=False, progressive=False)
    else:
        raise ValueError(f"unknown image format {fmt!r}; valid: png, jpeg")
    return buffer.getvalue()


def write_image(path: Path, scene: Scene, image_size: int, rng: np.random.Generator) -> bytes:
    """Render ``scene`` and write it to ``path`` (format from the suffix); return the bytes written."""
    fmt = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    data = encode_image(render_scene(scene, image_size, rng), fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data
