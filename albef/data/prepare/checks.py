"""Checks of a local dataset copy against its manifest: raw files, image folders, prepared outputs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from albef.data.prepare.manifest import Count, Manifest, OutputSpec
from albef.data.prepare.readback import FORMATS

MAX_LISTED = 10
"""How many missing images a finding names before it only counts them."""

Level = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Finding:
    """One result of a check; any ``error`` makes the preparation fail."""

    level: Level
    message: str


@dataclass(frozen=True)
class OutputResult:
    """What was found in one output file (``source``: the source that wrote it now, ``None``: already there)."""

    file: str
    present: bool
    source: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    missing_images: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- checks
def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_files(manifest: Manifest, root: Path) -> list[Finding]:
    """Raw files whose SHA-256 differs from the manifest's (errors).

    Absent raw files are not findings by themselves: an output may come from another source, and an output
    that cannot be made is reported with the inputs it needs (:func:`output_findings`).
    """
    return [
        Finding("error", f"{raw.path}: SHA-256 differs from the manifest's {raw.sha256}")
        for raw in manifest.files
        if raw.sha256 and (root / raw.path).is_file() and sha256_of(root / raw.path) != raw.sha256
    ]


def count_images(folder: Path, suffix: str, recursive: bool) -> int:
    """Number of files ending in ``suffix`` (case-insensitive) in ``folder`` (and below if ``recursive``)."""
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sum(1 for p in files if p.name.lower().endswith(suffix.lower()) and p.is_file())


def _count_finding(what: str, actual: int, expected: Count) -> Finding | None:
    if actual == expected.value:
        return None
    level: Level = "error" if expected.verified else "warning"
    unverified = "" if expected.verified else "; that count is unverified"
    return Finding(level, f"{what}: {actual}, expected {expected.value} ({expected.source}{unverified})")


def check_image_dirs(manifest: Manifest, root: Path) -> list[Finding]:
    """Missing image folders and wrong image counts."""
    findings: list[Finding] = []
    for folder in manifest.image_dirs:
        path = root / folder.path
        if not path.is_dir():
            findings.append(Finding("error", f"missing image folder {folder.path}"))
        elif folder.count is not None:
            actual = count_images(path, folder.suffix, folder.recursive)
            found = _count_finding(f"{folder.path}: '*{folder.suffix}' files", actual, folder.count)
            findings.extend([found] if found else [])
    return findings


def missing_images(root: Path, image_root: str, images: Iterable[str]) -> list[str]:
    """The images (relative to ``root/image_root``; absolute paths kept) that are not files."""
    base = root / image_root
    return [image for image in images if not (base / image).is_file()]


def _missing_output(manifest: Manifest, spec: OutputSpec, root: Path) -> Finding:
    ways = [
        f"{s.label} ({'inputs present' if all((root / p).exists() for p in s.inputs) else 'inputs missing'})"
        for s in manifest.sources
        if spec.file in s.outputs.values()
    ]
    message = f"{spec.file}: not in the output folder; made by one of: {' | '.join(ways)}"
    return Finding("note" if spec.optional else "error", message)


def verify_output(spec: OutputSpec, root: Path, out: Path, images: bool) -> OutputResult:
    """Read an output back through its reader and summarise it (the findings come from :func:`output_findings`)."""
    path = out / spec.file
    if not path.is_file():
        return OutputResult(spec.file, present=False)
    contents = FORMATS[spec.format](path)
    absent = (
        missing_images(root, spec.image_root, contents.images)
        if images and spec.image_root is not None
        else []
    )
    return OutputResult(spec.file, present=True, counts=contents.counts, missing_images=absent)


def output_findings(manifest: Manifest, spec: OutputSpec, result: OutputResult, root: Path) -> list[Finding]:
    """Findings about one output: absent (with the sources that make it), wrong counts, missing images."""
    if not result.present:
        return [_missing_output(manifest, spec, root)]
    findings = [
        _count_finding(f"{spec.file}: {key}", result.counts.get(key, -1), expected)
        for key, expected in spec.counts.items()
    ]
    if result.missing_images:
        shown = ", ".join(result.missing_images[:MAX_LISTED])
        more = "" if len(result.missing_images) <= MAX_LISTED else ", ..."
        message = f"{spec.file}: {len(result.missing_images)} image(s) missing under {spec.image_root}: {shown}{more}"
        findings.append(Finding("error", message))
    return [f for f in findings if f is not None]
