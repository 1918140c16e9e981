"""Reading images, with errors that name the image, the annotation file and the record.

A missing or unreadable image is a :class:`~albef.data.errors.DataError` by default (config
``data.bad_images: error``), e.g.::

    data/coco_train.json: record 17: image /data/coco/val2014/x.jpg: file not found

With ``data.bad_images: skip`` the sample is dropped instead, but never silently: each skip is logged as a
warning, and :class:`SkippedImages` counts the skips and gives the summary printed at the end of the run.

Unlike the official datasets, nothing here changes PIL's global settings (the official code sets
``ImageFile.LOAD_TRUNCATED_IMAGES = True`` and ``Image.MAX_IMAGE_PIXELS = None`` on import), so a truncated
file is reported rather than silently read with its missing part filled in, and PIL's decompression-bomb limit stays in force.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from PIL import Image, UnidentifiedImageError

from albef.data.errors import DataError
from albef.data.shards import ShardMember

logger = logging.getLogger(__name__)

BadImageMode = Literal["error", "skip"]
"""The values of the config's ``data.bad_images``."""

PathLike = str | os.PathLike[str]


def _describe(error: Exception) -> str:
    """A short reason for an image that failed to load."""
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, UnidentifiedImageError):
        return "not an image PIL can identify (corrupt or unsupported format)"
    return f"corrupt or truncated image ({type(error).__name__}: {error})"


def _image_error(path: PathLike, reason: str, source: PathLike | None, index: int | None) -> DataError:
    if source is None:
        return DataError(path, reason, index=index)
    return DataError(source, f"image {os.fspath(path)}: {reason}", index=index)


# PIL reports broken files as OSError, SyntaxError (bad PNG chunks) or ValueError, depending on the codec.
_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _read_rgb(path: PathLike) -> Image.Image:
    opened = path.open() if isinstance(path, ShardMember) else path  # an image inside a tar shard
    with Image.open(opened) as image:
        image.load()  # decode now, so a truncated file fails here and not inside a transform
        return image.convert("RGB")


def load_image(path: PathLike, *, source: PathLike | None = None, index: int | None = None) -> Image.Image:
    """Read an image file fully and convert it to RGB.

    Args:
        path: The image file.
        source: The annotation file the image was listed in, for the error message.
        index: The record's 0-based position in ``source``, for the error message.

    Returns:
        An RGB image, fully decoded and detached from the file.

    Raises:
        DataError: If the file is missing or cannot be decoded; the message names ``path``, ``source`` and
            ``index``.
    """
    try:
        return _read_rgb(path)
    except _READ_ERRORS as error:
        raise _image_error(path, _describe(error), source, index) from error


@dataclass(frozen=True)
class SkippedImage:
    """One image dropped under ``data.bad_images: skip``.

    Attributes:
        path: The image file.
        source: The annotation file that listed it, if known.
        index: The record's 0-based position in ``source``, if known.
        reason: Why it could not be read (``file not found``, ``corrupt or truncated image (...)``).
    """

    path: str
    source: str | None
    index: int | None
    reason: str

    def __str__(self) -> str:
        return str(_image_error(self.path, self.reason, self.source, self.index))


class BadImagePolicy:
    """What to do with an image that cannot be read: raise (``"error"``) or skip (``"skip"``).

    Under ``"skip"``, :meth:`load` returns a :class:`SkippedImage` instead of the image and logs a warning.
    The dataset should hand that record on in place of the sample, so that it reaches the main process
    (``DataLoader`` workers have their own memory) where a :class:`SkippedImages` counts it.

    Args:
        mode: ``"error"`` (the default) or ``"skip"``, the config's ``data.bad_images``.
    """

    def __init__(self, mode: BadImageMode = "error") -> None:
        if mode not in ("error", "skip"):
            raise ValueError(f"data.bad_images must be 'error' or 'skip', got {mode!r}")
        self.mode: BadImageMode = mode

    def load(
        self, path: PathLike, *, source: PathLike | None = None, index: int | None = None
    ) -> Image.Image | SkippedImage:
        """Load an image as :func:`load_image` does, or describe why it was skipped.

        Args:
            path: The image file.
            source: The annotation file the image was listed in.
            index: The record's 0-based position in ``source``.

        Returns:
            The RGB image, or under ``"skip"`` a :class:`SkippedImage` if it could not be read.

        Raises:
            DataError: Under ``"error"``, if the image cannot be read.
        """
        try:
            return _read_rgb(path)
        except _READ_ERRORS as error:
            if self.mode == "error":
                raise _image_error(path, _describe(error), source, index) from error
            skipped = SkippedImage(
                path=os.fspath(path),
                source=None if source is None else os.fspath(source),
                index=index,
                reason=_describe(error),
            )
            logger.warning("skipping unreadable image: %s", skipped)
            return skipped

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mode!r})"


class SkippedImages:
    """The images skipped during a run, for the summary at its end.

    Feed it in the main process with the :class:`SkippedImage` records that come back with the batches.
    """

    def __init__(self) -> None:
        self._items: list[SkippedImage] = []

    def add(self, item: SkippedImage) -> None:
        """Record one skipped image."""
        self._items.append(item)

    def extend(self, items: Iterable[SkippedImage]) -> None:
        """Record several skipped images (e.g. those of one batch)."""
        self._items.extend(items)

    @property
    def count(self) -> int:
        """Number of skips recorded (an image skipped in two epochs counts twice)."""
        return len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[SkippedImage]:
        return iter(self._items)

    def summary(self, limit: int = 10) -> str:
        """The end-of-run report: how many skips, over how many distinct files, and the first ``limit``.

        Args:
            limit: How many skipped images to list one per line.

        Returns:
            ``"no images skipped"``, or e.g.::

                skipped 3 unreadable images (2 distinct files; data.bad_images=skip):
                  data/a.json: record 4: image img/4.jpg: file not found
                  ...
        """
        if not self._items:
            return "no images skipped"
        distinct = len({item.path for item in self._items})
        noun = "image" if len(self._items) == 1 else "images"
        lines = [
            f"skipped {len(self._items)} unreadable {noun} ({distinct} distinct "
            f"file{'' if distinct == 1 else 's'}; data.bad_images=skip):"
        ]
        lines += [f"  {item}" for item in self._items[:limit]]
        if len(self._items) > limit:
            lines.append(f"  ... and {len(self._items) - limit} more")
        return "\n".join(lines)
