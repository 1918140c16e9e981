"""The on-disk cache of a retrieval split's encoded features (``albef evaluate retrieval --cache-dir``).

A cache entry is keyed by a SHA-256 over everything the features depend on: the checkpoint's content
digest, the model config, the split's content (image paths, captions, links) and each image file's size and
modification time, and the encoding settings (resolution, text length, word limit, tokenizer, precision,
storage dtype, whether tokens are kept). Changing any of them is a miss. Entries are written atomically, so a
crash never leaves a half-written file that a later run would read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from albef.data.datasets import resolve_image
from albef.data.records import RetrievalEvalSet
from albef.data.shards import ShardMember
from albef.evaluation.encode import RetrievalFeatures
from albef.fileio import atomic_torch_save

CACHE_FORMAT = 1
"""Bump when the stored layout or the meaning of a feature changes: older entries then miss."""

CacheStatus = Literal["disabled", "hit", "miss", "stale"]


def _image_stats(split: RetrievalEvalSet, image_root: str | Path) -> Iterator[str]:
    """``path size mtime_ns`` of each image file (``missing`` when it cannot be read)."""
    for image in split.images:
        path = resolve_image(image_root, image)
        try:
            stat = os.stat(path.shard if isinstance(path, ShardMember) else path)
            yield f"{image}\0{stat.st_size}\0{stat.st_mtime_ns}"
        except OSError:
            yield f"{image}\0missing"


def data_fingerprint(split: RetrievalEvalSet, image_root: str | Path) -> str:
    """SHA-256 of a split's content and of its image files' sizes and modification times."""
    digest = hashlib.sha256()
    digest.update(json.dumps([split.images, split.texts, split.img2txt], ensure_ascii=False).encode())
    for line in _image_stats(split, image_root):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def cache_key(
    checkpoint_sha256: str, model_config: Mapping[str, Any], data: str, settings: Mapping[str, Any]
) -> str:
    """The entry key: SHA-256 of the checkpoint digest, model config, data fingerprint and encoding settings."""
    material = {
        "format": CACHE_FORMAT,
        "checkpoint": checkpoint_sha256,
        "model": model_config,
        "data": data,
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


class FeatureCache:
    """Retrieval features on disk, one file per key under ``directory``.

    Args:
        directory: Where the entries live (created on the first save).

    Attributes:
        status: What the last :meth:`load` found (``hit``, ``miss``, or ``stale`` for an entry that could not
            be used: unreadable, written under another key, or without the tokens a re-ranking needs).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.status: CacheStatus = "miss"

    def path(self, key: str) -> Path:
        """The entry file of ``key``."""
        return self.directory / f"retrieval-features-{key[:32]}.pt"

    def load(self, key: str, need_tokens: bool) -> RetrievalFeatures | None:
        """The cached features of ``key``, or ``None`` (a miss) when there is no usable entry."""
        path = self.path(key)
        self.status = "miss"
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            features = RetrievalFeatures.from_tensors(entry["tensors"])
            usable = entry["key"] == key and (features.has_tokens or not need_tokens)
        except Exception:  # an unreadable entry is a miss; the next save replaces it
            usable = False
        if not usable:
            self.status = "stale"
            return None
        self.status = "hit"
        return features

    def save(self, key: str, features: RetrievalFeatures) -> Path:
        """Write the entry of ``key`` atomically; returns its path."""
        return atomic_torch_save(
            {"key": key, "format": CACHE_FORMAT, "tensors": features.tensors()}, self.path(key)
        )
