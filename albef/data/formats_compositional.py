"""Readers for the compositionality benchmarks in their official layouts: Winoground, SugarCrepe and ARO.

- **Winoground** (``data/examples.jsonl`` of the release): one JSON object a line with ``id``, ``caption_0``,
  ``caption_1``, ``image_0``, ``image_1`` (names without suffix; the images are ``data/images/<name>.png``),
  ``tag``, ``secondary_tag``, ``num_main_preds`` and ``collapsed_tag`` (``Object``, ``Relation`` or ``Both``).
- **SugarCrepe** (one file per subset, ``add_obj.json`` ... ``swap_att.json``): a JSON object keyed by example id,
  each ``{"filename": "000000391895.jpg", "caption": <positive>, "negative_caption": <hard negative>}``; the
  images are COCO val2017.
- **ARO** VG-Relation / VG-Attribution (``visual_genome_relation.json``, ``visual_genome_attribution.json``): a
  list of ``{"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption"}`` plus
  ``relation_name`` (VG-Relation) or ``attributes`` (a pair, VG-Attribution); the image is cropped to the box,
  as ARO does. COCO-Order and Flickr30K-Order start from the Karpathy test captions (``[{"image", "caption":
  [...]}]``, the official ALBEF retrieval files) and perturb each caption four ways
  (:mod:`albef.evaluation.word_order`).

Every reader returns :class:`ContrastExample` s (one image, the true caption first, then its negatives, and the
group the benchmark averages over) or :class:`WinogroundExample` s, and raises a ``DataError`` that names the
file, the record and the field for anything malformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from albef.data.errors import DataError
from albef.data.formats_base import (
    PathLike,
    Record,
    Where,
    describe,
    load_json,
    read_json_lines,
    read_records,
)

SUGARCREPE_SUBSETS = (
    "add_obj",
    "add_att",
    "replace_obj",
    "replace_att",
    "replace_rel",
    "swap_obj",
    "swap_att",
)
"""The subsets of SugarCrepe (``obj`` is spelt ``ent`` in some copies of the release; both are read)."""
ARO_VG = ("vg_relation", "vg_attribution")
Box = tuple[float, float, float, float]
"""``(x, y, w, h)`` in pixels of the original image."""


@dataclass(frozen=True)
class WinogroundExample:
    """Two images and two captions that use the same words; caption ``i`` goes with image ``i``."""

    id: str
    images: tuple[str, str]
    captions: tuple[str, str]
    tag: str
    collapsed_tag: str


@dataclass(frozen=True)
class ContrastExample:
    """One image, its true caption and the captions it must score lower (``captions[0]`` is the true one).

    Attributes:
        id: The example's id in its file.
        image: Image path relative to the benchmark's image root.
        captions: The true caption, then the negatives.
        group: What the benchmark averages over: the SugarCrepe subset, the ARO relation or attribute pair.
        box: The crop ``(x, y, w, h)`` applied before the transform (ARO's VG sets), else ``None``.
    """

    id: str
    image: str
    captions: tuple[str, ...]
    group: str
    box: Box | None = None


def _image_name(name: str) -> str:
    return name if Path(name).suffix else f"{name}.png"


def read_winoground(path: PathLike) -> list[WinogroundExample]:
    """The examples of Winoground's ``examples.jsonl`` (module docstring), in file order."""
    out = []
    for rec in read_json_lines(path):
        out.append(
            WinogroundExample(
                id=str(rec.image_id("id")),
                images=(_image_name(rec.nonblank("image_0")), _image_name(rec.nonblank("image_1"))),
                captions=(rec.nonblank("caption_0"), rec.nonblank("caption_1")),
                tag=rec.optional_string("tag") or "",
                collapsed_tag=rec.optional_string("collapsed_tag") or "",
            )
        )
    if not out:
        raise DataError(path, "no examples")
    return out


def sugarcrepe_file(folder: PathLike, subset: str) -> Path:
    """The file of ``subset`` in ``folder``: ``<subset>.json``, or the ``ent`` spelling of ``obj``."""
    folder = Path(folder)
    for name in (subset, subset.replace("_obj", "_ent")):
        if (folder / f"{name}.json").is_file():
            return folder / f"{name}.json"
    raise DataError(folder / f"{subset}.json", "missing (the SugarCrepe subset file)")


def read_sugarcrepe(path: PathLike, subset: str) -> list[ContrastExample]:
    """One SugarCrepe subset file: ``{id: {filename, caption, negative_caption}}``, in key order of the file."""
    data = load_json(path)
    if not isinstance(data, dict) or not data:
        raise DataError(path, f"expected a non-empty JSON object keyed by example id, got {describe(data)}")
    out = []
    for i, (key, raw) in enumerate(data.items()):
        rec = Record(raw, Where(path, index=i, section=f"example {key!r}"))
        captions = (rec.nonblank("caption"), rec.nonblank("negative_caption"))
        out.append(ContrastExample(str(key), rec.nonblank("filename"), captions, subset))
    return out


def _box(rec: Record) -> Box:
    values = []
    for name in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"):
        value = rec.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise rec.error(name, f"expected a number, got {describe(value)}")
        values.append(float(value))
    if values[2] <= 0 or values[3] <= 0:
        raise rec.error("bbox_w", f"the box must have a positive size, got {values[2]} x {values[3]}")
    return values[0], values[1], values[2], values[3]


def read_aro_vg(path: PathLike, kind: str) -> list[ContrastExample]:
    """VG-Relation (``kind="vg_relation"``, grouped by ``relation_name``) or VG-Attribution
    (``"vg_attribution"``, grouped by the attribute pair ``"<a>_<b>"``); the true caption first."""
    if kind not in ARO_VG:
        raise ValueError(f"kind must be one of {ARO_VG}, got {kind!r}")
    out = []
    for rec in read_records(path):
        if kind == "vg_relation":
            group = rec.nonblank("relation_name")
        else:
            pair = rec.nonblank_list("attributes")
            if len(pair) != 2:
                raise rec.error("attributes", f"expected two attributes, got {len(pair)}")
            group = f"{pair[0]}_{pair[1]}"
        captions = (rec.nonblank("true_caption"), rec.nonblank("false_caption"))
        ident = rec.raw.get("image_id", rec.where.index)
        out.append(ContrastExample(str(ident), rec.nonblank("image_path"), captions, group, _box(rec)))
    if not out:
        raise DataError(path, "no examples")
    return out


def read_caption_images(path: PathLike) -> list[tuple[str, tuple[str, ...]]]:
    """``(image, captions)`` of a Karpathy-style caption file (``[{"image", "caption": str | [str, ...]}]``)."""
    return [(rec.nonblank("image"), rec.nonblank_or_list("caption")) for rec in read_records(path)]


def read_relation_list(path: PathLike) -> list[str]:
    """Relation names, from a JSON list of strings or a text file with one a line (``data.excluded_relations``)."""
    path = Path(path)
    if path.suffix == ".json":
        data = load_json(path)
        if not isinstance(data, list) or not all(isinstance(x, str) and x.strip() for x in data):
            raise DataError(path, "expected a JSON list of relation names")
        return [x.strip() for x in data]
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(path, f"cannot read the file ({err.strerror or err})") from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def excluded_relations_of_notebook(path: PathLike, name: str = "symmetric") -> list[str]:
    """The list literal assigned to ``name`` in a code cell of a Jupyter notebook (ARO's "Replicate ARO!"
    notebook names the VG-Relation relations its macro accuracy leaves out ``symmetric``), read with
    ``ast.literal_eval``: nothing in the notebook is executed."""
    import ast

    notebook = load_json(path)
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise DataError(path, "not a Jupyter notebook (no cells)")
    for cell in cells:
        source = cell.get("source", "") if isinstance(cell, dict) else ""
        code = "".join(source) if isinstance(source, list) else str(source)
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                value = ast.literal_eval(node.value)
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    return value
    raise DataError(path, f"no code cell assigns a list of strings to {name!r}")
