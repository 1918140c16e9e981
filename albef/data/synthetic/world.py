"""Planning, rendering and writing a whole synthetic world; reusing one that already exists.

``generate_world`` writes into an empty directory; ``ensure_world`` is what commands call: it reuses a world
written for the same parameters, and otherwise generates into a temporary sibling directory and renames it
into place, so an interrupted run never leaves a half world that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from albef.data.synthetic.captioning import build_pretrain, build_retrieval
from albef.data.synthetic.chance import world_chance
from albef.data.synthetic.grounding import build_grounding
from albef.data.synthetic.plan import Plan, pixel_stream
from albef.data.synthetic.probes import build_binding_pairs, build_pretrain_negatives, build_probes
from albef.data.synthetic.reasoning import build_nlvr, build_ve
from albef.data.synthetic.render import write_image
from albef.data.synthetic.sizes import SIZES, SizeSpec
from albef.data.synthetic.vqa import build_vqa
from albef.data.synthetic.writers import (
    IMAGE_CHECKSUMS,
    MANIFEST,
    FileEntry,
    describe_file,
    image_checksums,
    read_manifest,
    sha256_bytes,
    write_files,
    write_manifest,
    write_text_entry,
)
from albef.errors import ConfigError

GENERATOR = "albef.data.synthetic"
WORLD_VERSION = "6"
"""Bump whenever the same (size, seed, image size) would give different files."""
TOKENIZER_DIR = "tokenizer"
VOCAB_SIZE = 512
DEFAULT_IMAGE_SIZE = 64

SCENES_NOTE = (
    "scenes.json maps every image path to its ground truth: objects with shape, color, size (small/large) "
    "and grid cell (row 0 = top, col 0 = left, 3x3 grid). 'X left of Y' means col(X) < col(Y), 'X above Y' "
    "means row(X) < row(Y); counts in texts are exact; every caption, answer and label is computed from this."
)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, called while a world is generated (the library never prints)."""


class SyntheticWorldError(ConfigError):
    """A world cannot be generated where asked (an unknown size, a non-empty foreign directory, or another
    world of the current version that would be replaced)."""


def get_size(size: str) -> SizeSpec:
    """The :class:`SizeSpec` named ``size``; an unknown name lists the valid ones."""
    if size not in SIZES:
        raise SyntheticWorldError(f"unknown synthetic world size {size!r}; valid sizes: {', '.join(SIZES)}")
    return SIZES[size]


def plan_world(size: str = "small", seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE) -> Plan:
    """Everything a world holds except pixels and the tokenizer: scenes, records, texts, caption meanings.

    Args:
        size: A name in :data:`SIZES`.
        seed: World seed; every random choice derives from it.
        image_size: Side of the images in pixels (recorded in the COCO file).

    Returns:
        The plan; :func:`generate_world` renders and writes exactly this.
    """
    spec = get_size(size)
    plan = Plan(seed)
    build_pretrain(plan, spec)
    build_retrieval(plan, spec, image_size)
    build_vqa(plan, spec)
    build_nlvr(plan, spec)
    build_ve(plan, spec)
    build_grounding(plan, spec, image_size)  # after the others: every earlier image keeps its id and pixels
    build_probes(plan, spec)  # last, for the same reason
    build_pretrain_negatives(plan)
    build_binding_pairs(plan)
    plan.info["scenes"] = SCENES_NOTE
    plan.files["scenes.json"] = {
        image.path: {"image_id": image.image_id, **image.scene.to_json()} for image in plan.images
    }
    return plan


def _render(plan: Plan, root: Path, image_size: int, progress: Progress | None) -> dict[str, str]:
    digests = {}
    total = len(plan.images)
    for done, image in enumerate(plan.images, start=1):
        data = write_image(
            root / image.path, image.scene, image_size, pixel_stream(plan.seed, image.image_id)
        )
        digests[image.path] = sha256_bytes(data)
        if progress is not None and (done % 64 == 0 or done == total):
            progress("rendering images", done, total)
    return digests


def _train_tokenizer(plan: Plan, root: Path) -> dict[str, FileEntry]:
    from albef.data.wordpiece import train_wordpiece  # deferred: pulls in torch

    out = train_wordpiece(plan.texts, root / TOKENIZER_DIR, vocab_size=VOCAB_SIZE)
    return {
        path.relative_to(root).as_posix(): describe_file(root, path.relative_to(root).as_posix())
        for path in sorted(Path(out).rglob("*"))
        if path.is_file()
    }


def _manifest(plan: Plan, size: str, image_size: int, entries: dict[str, FileEntry]) -> dict[str, Any]:
    return {
        "generator": GENERATOR,
        "world_version": WORLD_VERSION,
        "seed": plan.seed,
        "size": size,
        "image_size": image_size,
        "images": {"count": len(plan.images), "checksums": IMAGE_CHECKSUMS},
        "splits": plan.splits,
        "files": {path: entries[path].to_json() for path in sorted(entries)},
        "chance": world_chance(plan.files),
        "notes": plan.info,
    }


def generate_world(
    out_dir: str | os.PathLike[str],
    size: str = "small",
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Generate a world into ``out_dir`` (created; it must be absent or empty). Not atomic: see
    :func:`ensure_world`.

    Args:
        out_dir: Target directory; image paths in the files are relative to it.
        size: A name in :data:`SIZES`.
        seed: World seed. The same (size, seed, image_size) gives byte-identical files.
        image_size: Side of the images in pixels.
        progress: Optional callback ``(stage, done, total)``.

    Returns:
        The manifest, as written to ``out_dir/manifest.json``.
    """
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise SyntheticWorldError(f"{root} is not empty; generate into a new or empty directory")
    if image_size < 16:
        raise SyntheticWorldError(f"image size {image_size} is too small to draw the shapes (need >= 16)")
    if progress is not None:
        progress("planning", 0, 1)
    plan = plan_world(size, seed, image_size)
    root.mkdir(parents=True, exist_ok=True)
    digests = _render(plan, root, image_size, progress)
    if progress is not None:
        progress("writing annotation files", 0, 1)
    entries = write_files(root, plan.files)
    entries[IMAGE_CHECKSUMS] = write_text_entry(root, IMAGE_CHECKSUMS, image_checksums(digests))
    if progress is not None:
        progress("training the WordPiece vocabulary", 0, 1)
    entries.update(_train_tokenizer(plan, root))
    manifest = _manifest(plan, size, image_size, entries)
    write_manifest(root, manifest)
    return manifest


def world_matches(root: str | os.PathLike[str], size: str, seed: int, image_size: int) -> bool:
    """Whether ``root`` holds a complete world of this generator version and these parameters."""
    manifest = read_manifest(Path(root))
    if manifest is None:
        return False
    wanted = {"generator": GENERATOR, "world_version": WORLD_VERSION, "seed": seed, "size": size}
    wanted["image_size"] = image_size
    return all(manifest.get(key) == value for key, value in wanted.items())


def _is_replaceable(root: Path) -> bool:
    """An absent or empty directory, or one holding a world of this generator (any version)."""
    if not root.exists():
        return True
    if not root.is_dir():
        return False
    manifest = read_manifest(root)
    return not any(root.iterdir()) or (manifest is not None and manifest.get("generator") == GENERATOR)


def _move_into_place(staged: Path, root: Path) -> None:
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / "world")
    os.replace(staged, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def ensure_world(
    root: str | os.PathLike[str],
    size: str = "medium",
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Make ``root`` hold the world (size, seed, image_size), generating it only if needed.

    The world is reused if ``root/manifest.json`` was written by this generator version for the same
    parameters (and ``force`` is false). Otherwise it is generated into a temporary sibling directory and
    renamed onto ``root``, replacing a world of an older generator version there (never, without ``force``,
    a current world of another size or seed). A concurrent process that finishes first wins;
    this call then reuses its world.

    Args:
        root: World directory.
        size: A name in :data:`SIZES`.
        seed: World seed.
        image_size: Side of the images in pixels.
        force: Regenerate even if a matching world exists.
        progress: Optional callback ``(stage, done, total)``.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        SyntheticWorldError: If ``root`` is a non-empty directory (or a file) that holds no synthetic
            world, which this function refuses to delete; if it holds a current-version world of other
            parameters (without ``force``); or an unknown size.
    """
    root = Path(root)
    get_size(size)
    if not force and world_matches(root, size, seed, image_size):
        return root
    if not _is_replaceable(root):
        raise SyntheticWorldError(
            f"{root} exists and holds no synthetic world ({MANIFEST} missing); not overwriting it"
        )
    manifest = read_manifest(root)
    if not force and manifest is not None and manifest.get("world_version") == WORLD_VERSION:
        have = f"size {manifest.get('size')}, seed {manifest.get('seed')}, {manifest.get('image_size')} px"
        raise SyntheticWorldError(
            f"{root} holds another synthetic world ({have}) than the one asked for (size {size}, seed {seed}, "
            f"{image_size} px); not replacing it: set data.synthetic_size/data.synthetic_seed to match it, "
            "point data.root elsewhere, or regenerate it with albef data synth --force"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        generate_world(staged, size, seed, image_size, progress)
        try:
            _move_into_place(staged, root)
        except OSError:
            if not world_matches(root, size, seed, image_size):
                raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return root
