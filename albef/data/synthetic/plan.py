"""The in-memory plan of a world: scenes to render, file contents to write, texts for the tokenizer.

Planning is pure and cheap (no pixels); :mod:`albef.data.synthetic.world` renders and writes a plan. Every
random stream is derived from the world seed and a fixed name, so one task's data does not change when
another task's size does.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from albef.data.synthetic.logic import Form
from albef.data.synthetic.scene import Scene

IMAGE_DIR = "images"
VE_IMAGE_DIR = "ve_images"
"""SNLI-VE images are JPEG files named by id, as the official VE loader appends ``.jpg`` to the id."""


def _seed_sequence(seed: int, name: str, index: int = 0) -> np.random.SeedSequence:
    # crc32 is stable across processes and Python versions, unlike hash(str).
    return np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(name.encode("utf-8")), index))


def text_stream(seed: int, name: str) -> random.Random:
    """The ``random.Random`` stream named ``name`` of world ``seed`` (scene sampling and text)."""
    state = _seed_sequence(seed, name).generate_state(4, np.uint64)
    return random.Random(int.from_bytes(state.tobytes(), "little"))


def pixel_stream(seed: int, image_id: int) -> np.random.Generator:
    """The ``numpy`` PCG64 stream that renders image ``image_id`` of world ``seed``."""
    return np.random.Generator(np.random.PCG64(_seed_sequence(seed, "pixels", image_id)))


@dataclass(frozen=True)
class PlannedImage:
    """An image to render: its path relative to the world root, its integer id and its scene."""

    path: str
    image_id: int
    scene: Scene


@dataclass
class Plan:
    """Everything a world consists of, before rendering.

    Attributes:
        seed: World seed.
        images: Images in id order.
        files: Relative path -> JSON-serialisable content (a list of records for ``.jsonl``).
        texts: Every sentence, caption, question and answer (the tokenizer's training corpus).
        forms: (image path, caption) -> meaning, for the retrieval captions (train, val and test).
        info: Facts for the manifest (noise rate, image templates, design notes).
        splits: Split name -> counts, for the manifest.
    """

    seed: int
    images: list[PlannedImage] = field(default_factory=list)
    files: dict[str, Any] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    forms: dict[tuple[str, str], Form] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, dict[str, int]] = field(default_factory=dict)

    def stream(self, name: str) -> random.Random:
        """The named random stream of this world (see :func:`text_stream`)."""
        return text_stream(self.seed, name)

    def add_image(
        self, folder: str, scene: Scene, stem: str | None = None, root: str = IMAGE_DIR
    ) -> PlannedImage:
        """Register an image to render and return it.

        Args:
            folder: Sub-folder of ``root``, e.g. ``"retrieval_test"``.
            scene: What it shows.
            stem: File name without suffix; defaults to the zero-padded image id.
            root: Top folder; a ``.jpg`` suffix is used for ``ve_images``, ``.png`` elsewhere.

        Returns:
            The planned image with its path relative to the world root.
        """
        image_id = len(self.images) + 1
        suffix = ".jpg" if root == VE_IMAGE_DIR else ".png"
        name = stem if stem is not None else f"{image_id:06d}"
        path = f"{root}/{folder}/{name}{suffix}" if folder else f"{root}/{name}{suffix}"
        image = PlannedImage(path, image_id, scene)
        self.images.append(image)
        return image
