"""WebDataset tar shards as a data source: read them as records of the usual formats, write them from JSON lists.

A shard is a tar file in the WebDataset / img2dataset layout: the members of one sample share a key
(``000000123.jpg``, ``000000123.txt``, ``000000123.json``). Wherever a training file is named
(``data.train_files``), a ``.tar`` file or a brace pattern of them (``cc3m/{00000..00331}.tar``) stands for a
JSON list: each sample becomes the record of that list, its fields taken from the ``.json`` member (the
official record, e.g. ``{"caption": ..., "image_id": ...}`` or a VQA question with its answers; the
img2dataset metadata is ignored where it does not name a field), ``caption`` from the ``.txt`` member when the
JSON has none, and ``image`` a reference to the image member inside the shard (:class:`ShardMember`).

The shards are indexed once (member offsets and the small text members, cached beside each shard as
``<shard>.index.json``), so a sample is read by seeking to its image: the dataset stays a map-style dataset,
and everything the loaders do with JSON lists holds for shards too (the resumable sampler's exact position
after a SIGKILL, one shard of the indices per rank, per-sample randomness per seed and epoch, workers).

:func:`write_shards` turns a JSON list and its image folder into shards with :class:`webdataset.ShardWriter`
(the image files' bytes unchanged, fixed member times so the same input gives the same bytes).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from albef.data.errors import DataError
from albef.fileio import atomic_write_json

SCHEME = "tar://"
"""Prefix of an image reference into a shard: ``tar://<shard>#<member>@<offset>+<size>``."""
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
INDEX_SUFFIX = ".index.json"
INDEX_VERSION = 1
_REF = re.compile(r"^tar://(?P<shard>.+)#(?P<member>[^#@]+)@(?P<offset>\d+)\+(?P<size>\d+)$")
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


@dataclass(frozen=True)
class ShardMember:
    """An image inside a shard, read by seeking to it; ``os.fspath`` names it as ``shard#member``."""

    shard: str
    member: str
    offset: int
    size: int

    @classmethod
    def parse(cls, ref: str) -> ShardMember:
        """The member a ``tar://`` reference names."""
        match = _REF.match(ref)
        if match is None:
            raise ValueError(f"not a shard member reference: {ref!r}")
        return cls(match["shard"], match["member"], int(match["offset"]), int(match["size"]))

    def ref(self) -> str:
        """The ``tar://`` reference of this member (what a record's ``image`` holds)."""
        return f"{SCHEME}{self.shard}#{self.member}@{self.offset}+{self.size}"

    def open(self) -> BinaryIO:
        """The member's bytes as a file object."""
        with open(self.shard, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.shard}: truncated at member {self.member}")
        return io.BytesIO(data)

    def __fspath__(self) -> str:
        return f"{self.shard}#{self.member}"


def is_shard_spec(name: str | os.PathLike[str]) -> bool:
    """Whether a data file name stands for shards (a ``.tar`` file or a brace pattern of them)."""
    return str(name).endswith(".tar")


def expand_shards(spec: str | os.PathLike[str]) -> list[Path]:
    """The shard files of a spec: ``a/{000..002}.tar`` -> ``a/000.tar a/001.tar a/002.tar`` (zero-padded as
    written); a plain ``.tar`` path is itself."""
    text = str(spec)
    match = _BRACES.search(text)
    if match is None:
        return [Path(text)]
    first, last = match.group(1), match.group(2)
    names = [
        text[: match.start()] + str(i).zfill(len(first)) + text[match.end() :]
        for i in range(int(first), int(last) + 1)
    ]
    return [path for name in names for path in expand_shards(name)]


def _key_and_extension(name: str) -> tuple[str, str]:
    """WebDataset's split of a member name: the key is everything before the first dot of the base name."""
    directory, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def _scan(shard: Path) -> list[dict[str, Any]]:
    """One entry per sample of a shard, in member order: its key, its image member, its text members."""
    samples: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, extension = _key_and_extension(info.name)
                sample = samples.setdefault(key, {"key": key})
                if extension in IMAGE_EXTENSIONS and "image" not in sample:
                    sample["image"] = [info.name, info.offset_data, info.size]
                elif extension in ("json", "txt"):
                    handle = tar.extractfile(info)
                    assert handle is not None
                    sample[extension] = handle.read().decode("utf-8")
    except (OSError, tarfile.TarError) as err:
        raise DataError(shard, f"not a readable tar shard ({err})") from err
    return list(samples.values())


def shard_index(shard: Path) -> list[dict[str, Any]]:
    """The shard's sample index, from ``<shard>.index.json`` when it matches the shard's size and time, else
    scanned (and cached there when the folder is writable)."""
    stat = shard.stat()
    stamp = {"version": INDEX_VERSION, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = shard.with_name(shard.name + INDEX_SUFFIX)
    if cache.is_file():
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
            if cached.get("stamp") == stamp:
                return list(cached["samples"])
        except (OSError, ValueError):
            pass  # unreadable or stale: scan again
    samples = _scan(shard)
    with contextlib.suppress(OSError):  # a read-only copy of the shards: scan each time
        atomic_write_json(cache, {"stamp": stamp, "samples": samples}, indent=None)
    return samples


def shard_records(spec: str | os.PathLike[str]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """``(shard, position in it, raw record)`` of every sample of the shards of ``spec``, in order."""
    shards = expand_shards(spec)
    missing = [str(s) for s in shards if not s.is_file()]
    if missing:
        raise DataError(spec, f"{len(missing)} shard(s) not found, the first: {missing[0]}")
    for shard in shards:
        for position, sample in enumerate(shard_index(shard)):
            yield shard, position, _record(shard, sample)


def _record(shard: Path, sample: dict[str, Any]) -> dict[str, Any]:
    """A sample as the record of a JSON list: the ``.json`` fields, ``caption`` from ``.txt``, the image."""
    raw: dict[str, Any] = {}
    if "json" in sample:
        try:
            loaded = json.loads(sample["json"])
        except ValueError as err:
            raise DataError(shard, f"sample {sample['key']}: its .json member is not JSON ({err})") from err
        raw = loaded if isinstance(loaded, dict) else {"value": loaded}
    if "caption" not in raw and "txt" in sample:
        raw["caption"] = sample["txt"]
    if "image" in sample:
        name, offset, size = sample["image"]
        raw["image"] = ShardMember(str(shard.resolve()), name, offset, size).ref()
    else:
        raw.pop("image", None)  # an image-less sample: the reader names the missing field
    return raw


def write_shards(
    records: list[dict[str, Any]],
    image_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    maxcount: int = 10000,
    prefix: str = "",
) -> list[Path]:
    """Write ``records`` (a JSON list's entries) and their images as shards ``<out_dir>/<prefix>NNNNNN.tar``.

    Each sample holds the image file's bytes (``.jpg``/``.png``/... by its suffix), the record without
    ``image`` as ``.json``, and a string caption as ``.txt`` too (img2dataset's layout). The shards are written
    into a temporary folder that replaces ``out_dir`` at the end, then indexed.

    Returns:
        The shard files, in order.
    """
    import webdataset

    out = Path(out_dir)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for stale in partial.glob("*"):
        stale.unlink()
    pattern = str(partial / f"{prefix}%06d.tar")
    with webdataset.ShardWriter(pattern, maxcount=maxcount, verbose=0, mtime=0.0) as writer:
        for i, record in enumerate(records):
            image = Path(record["image"])
            path = image if image.is_absolute() else Path(image_root) / image
            extension = path.suffix.lower().lstrip(".") or "jpg"
            meta = {k: v for k, v in record.items() if k != "image"}
            sample: dict[str, Any] = {"__key__": f"{i:09d}", extension: path.read_bytes(), "json": meta}
            if isinstance(record.get("caption"), str):
                sample["txt"] = record["caption"]
            writer.write(sample)
    if out.exists():
        for old in out.glob("*"):
            old.unlink()
        out.rmdir()
    partial.rename(out)
    shards = sorted(out.glob(f"{prefix}*.tar"))
    for shard in shards:
        shard_index(shard)
    return shards
