"""Byte-reproducible serialisation of a world: JSON / JSON-lines files, checksums and the manifest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
IMAGE_CHECKSUMS = "SHA256SUMS"
"""``sha256sum -c`` compatible list of every image file (the manifest lists the other files itself)."""


@dataclass(frozen=True)
class FileEntry:
    """What the manifest records about one file."""

    records: int
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        """As a JSON object (fixed key order)."""
        return {"records": self.records, "sha256": self.sha256, "bytes": self.bytes}


def encode(path: str, content: Any) -> bytes:
    """Serialise ``content`` for ``path``: JSON lines for ``.jsonl``, compact JSON otherwise.

    Key order is the order the records were built in, separators are fixed and the file ends with a
    newline, so equal content gives equal bytes.
    """
    if path.endswith(".jsonl"):
        return "".join(
            json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in content
        ).encode()
    return (json.dumps(content, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def record_count(content: Any) -> int:
    """Records of a file's content: list length, or the length of its main list for COCO / VQA v2 files."""
    if isinstance(content, list):
        return len(content)
    if isinstance(content, dict):
        for key in ("annotations", "questions"):
            if isinstance(content.get(key), list):
                return len(content[key])
        return len(content)
    raise TypeError(f"cannot count records of {type(content).__name__}")


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def write_bytes(root: Path, relative: str, data: bytes) -> None:
    """Write ``data`` to ``root/relative``, creating folders."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_files(root: Path, files: Mapping[str, Any]) -> dict[str, FileEntry]:
    """Write every planned file under ``root``.

    Args:
        root: World directory.
        files: Relative path -> content.

    Returns:
        Relative path -> manifest entry.
    """
    entries = {}
    for relative, content in files.items():
        data = encode(relative, content)
        write_bytes(root, relative, data)
        entries[relative] = FileEntry(record_count(content), sha256_bytes(data), len(data))
    return entries


def write_text_entry(root: Path, relative: str, text: str) -> FileEntry:
    """Write a text file whose records are its lines."""
    data = text.encode()
    write_bytes(root, relative, data)
    return FileEntry(text.count("\n"), sha256_bytes(data), len(data))


def describe_file(root: Path, relative: str) -> FileEntry:
    """Entry of an already written text file (its records are its lines)."""
    data = (root / relative).read_bytes()
    return FileEntry(data.count(b"\n"), sha256_bytes(data), len(data))


def image_checksums(digests: Mapping[str, str]) -> str:
    """``SHA256SUMS`` text: ``<sha256>  <path>`` per image, sorted by path."""
    return "".join(f"{digests[path]}  {path}\n" for path in sorted(digests))


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest.json`` (indented, for people); it is written last, so its presence marks a
    complete world."""
    write_bytes(root, MANIFEST, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of the world at ``root``, or ``None`` if absent or unreadable."""
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
