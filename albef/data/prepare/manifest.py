"""Dataset recipe manifests (``albef/resources/datasets/<name>.json``) and the registry of recipes.

A manifest lists the raw files expected under the data root (``files``, with checksums where known), the image
folders and their counts (``image_dirs``), the files the loaders read (``outputs``: format, image root, expected
counts) and the ways to make them (``sources``: a converter of :data:`~albef.data.prepare.converters.CONVERTERS`,
its inputs, and which of its results becomes which output). Every expected count names its source and whether
it was verified; ``datasets/README.md`` describes the schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from albef.data.formats_base import PathLike, Record, top_level_object
from albef.data.prepare.converters import CONVERTERS
from albef.data.prepare.readback import FORMATS
from albef.registry import Registry


@dataclass(frozen=True)
class Count:
    """An expected count and where it comes from (``verified``: checked against a file or a stored source)."""

    value: int
    source: str
    verified: bool


@dataclass(frozen=True)
class RawFile:
    """A raw file expected under the data root."""

    path: str
    description: str
    url: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class ImageDir:
    """An image folder under the data root: files ending in ``suffix`` (in sub-folders too if ``recursive``)."""

    path: str
    suffix: str
    recursive: bool
    count: Count | None


@dataclass(frozen=True)
class OutputSpec:
    """A file the loaders read, its format (a key of :data:`FORMATS`) and expected counts."""

    file: str
    format: str
    image_root: str | None
    """Folder (relative to the data root) that the file's image paths are relative to; ``None``: no images."""
    optional: bool
    counts: dict[str, Count]


@dataclass(frozen=True)
class SourceSpec:
    """One way to make outputs: ``converter`` applied to ``inputs``; ``outputs`` maps its result roles to files."""

    converter: str
    inputs: tuple[str, ...]
    outputs: dict[str, str]
    optional_inputs: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``converter(input, ...[, optional input, ...])``, as shown in reports."""
        optional = f"[, {', '.join(self.optional_inputs)}]" if self.optional_inputs else ""
        return f"{self.converter}({', '.join(self.inputs)}{optional})"


@dataclass(frozen=True)
class Manifest:
    """A dataset recipe (see the module docstring)."""

    name: str
    title: str
    homepage: str
    licence: str
    disk_size: str
    files: tuple[RawFile, ...]
    image_dirs: tuple[ImageDir, ...]
    outputs: tuple[OutputSpec, ...]
    sources: tuple[SourceSpec, ...]


# ----------------------------------------------------------------------------------------------- parsing
_KEYS = {
    "top": {
        "name",
        "title",
        "homepage",
        "licence",
        "disk_size",
        "readme",
        "notes",
        "files",
        "image_dirs",
        "outputs",
        "sources",
    },
    "files": {"path", "description", "url", "sha256"},
    "image_dirs": {"path", "suffix", "recursive", "count"},
    "outputs": {"file", "format", "image_root", "optional", "counts"},
    "sources": {"converter", "inputs", "optional_inputs", "outputs", "options"},
    "count": {"value", "source", "verified"},
}
"""Allowed keys of each manifest object: a misspelt key is an error, not a silently ignored entry."""


def _strict(rec: Record, kind: str) -> Record:
    unknown = sorted(set(rec.raw) - _KEYS[kind])
    if unknown:
        raise rec.error(unknown[0], f"unknown key; allowed: {', '.join(sorted(_KEYS[kind]))}")
    return rec


def _nested(rec: Record, name: str) -> Record:
    return Record(rec.get(name), replace(rec.where, prefix=f"{rec.where.prefix}{name}."))


def _count(rec: Record) -> Count:
    _strict(rec, "count")
    verified = rec.get("verified")
    if not isinstance(verified, bool):
        raise rec.error("verified", f"expected true or false, got {verified!r}")
    return Count(rec.integer("value"), rec.nonblank("source"), verified)


def _output(rec: Record) -> OutputSpec:
    _strict(rec, "outputs")
    fmt = rec.nonblank("format")
    if fmt not in FORMATS:
        raise rec.error("format", f"unknown format {fmt!r}; valid: {', '.join(sorted(FORMATS))}")
    counts = _nested(rec, "counts") if rec.has("counts") else None
    return OutputSpec(
        file=rec.nonblank("file"),
        format=fmt,
        image_root=rec.optional_string("image_root"),
        optional=rec.raw.get("optional") is True,
        counts={key: _count(_nested(counts, key)) for key in counts.raw} if counts else {},
    )


def _source(rec: Record, outputs: set[str]) -> SourceSpec:
    _strict(rec, "sources")
    converter = rec.nonblank("converter")
    if converter not in CONVERTERS:
        raise rec.error(
            "converter", f"unknown converter {converter!r}; valid: {', '.join(CONVERTERS.names())}"
        )
    roles = _nested(rec, "outputs")
    mapping = {role: roles.nonblank(role) for role in roles.raw}
    for role, file in mapping.items():
        if file not in outputs:
            raise roles.error(role, f"{file!r} is not one of the manifest's outputs")
    return SourceSpec(
        converter=converter,
        inputs=rec.nonblank_list("inputs"),
        outputs=mapping,
        optional_inputs=rec.nonblank_list("optional_inputs") if rec.has("optional_inputs") else (),
        options=dict(_nested(rec, "options").raw) if rec.has("options") else {},
    )


def parse_manifest(path: PathLike) -> Manifest:
    """Read and validate a recipe manifest (errors name the manifest file and the offending entry)."""
    top = _strict(top_level_object(path), "top")
    outputs = tuple(_output(rec) for rec in top.objects("outputs"))
    names = {o.file for o in outputs}
    dirs = tuple(
        ImageDir(
            _strict(rec, "image_dirs").nonblank("path"),
            rec.nonblank("suffix"),
            rec.raw.get("recursive") is True,
            _count(_nested(rec, "count")) if rec.has("count") else None,
        )
        for rec in top.objects("image_dirs")
    )
    return Manifest(
        name=top.nonblank("name"),
        title=top.nonblank("title"),
        homepage=top.nonblank("homepage"),
        licence=top.nonblank("licence"),
        disk_size=top.nonblank("disk_size"),
        files=tuple(
            RawFile(
                _strict(rec, "files").nonblank("path"),
                rec.nonblank("description"),
                rec.optional_string("url"),
                rec.optional_string("sha256"),
            )
            for rec in top.objects("files")
        ),
        image_dirs=dirs,
        outputs=outputs,
        sources=tuple(_source(rec, names) for rec in top.objects("sources")),
    )


def manifest_path(name: str) -> Path:
    """Where the packaged manifest of recipe ``name`` lives."""
    return Path(str(resources.files("albef").joinpath("resources", "datasets", f"{name}.json")))


@cache
def load_manifest(name: str) -> Manifest:
    """The packaged manifest of a registered recipe (see :data:`DATASETS`)."""
    return parse_manifest(manifest_path(DATASETS.get(name).name))


@dataclass(frozen=True)
class DatasetRecipe:
    """A registered dataset recipe; its manifest is read on first use."""

    name: str
    title: str

    def manifest(self) -> Manifest:
        """The recipe's manifest."""
        return load_manifest(self.name)


RECIPES = (
    ("coco", "MS-COCO 2014 captions: Karpathy retrieval splits (and the full caption sets)"),
    ("flickr30k", "Flickr30K captions: Karpathy retrieval splits"),
    ("vqa", "VQA v2: ALBEF train/val/test files and the 3,128-answer list"),
    ("vg", "Visual Genome QA: the extra VQA training questions (vg_qa.json)"),
    ("nlvr2", "NLVR2: lil-lab JSON lines to the ALBEF format"),
    ("snli-ve", "SNLI-VE: visual entailment on Flickr30K images"),
    ("cc3m", "Conceptual Captions 3M (pretraining; img2dataset download)"),
    ("sbu", "SBU Captions (pretraining; img2dataset download)"),
    ("cc12m", "Conceptual 12M (pretraining for ALBEF 14M; img2dataset download)"),
    (
        "refcoco+",
        "RefCOCO+: referring expressions on COCO images (weakly-supervised grounding)",
    ),
    ("winoground", "Winoground: two images, two captions of the same words (compositionality)"),
    ("sugarcrepe", "SugarCrepe: hard-negative captions on COCO val2017 images (compositionality)"),
    ("aro", "ARO: VG-Relation and VG-Attribution (the Order sets use the coco and flickr30k recipes)"),
)
DATASETS: Registry[DatasetRecipe] = Registry("dataset")
for _name, _title in RECIPES:
    DATASETS.add(_name, DatasetRecipe(_name, _title), help=_title)
