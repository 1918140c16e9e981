"""Readers for RefCOCO+ grounding in the official layout, and a safe reader of the REFER refs pickle.

- ``refcoco+_train.json``: ``[{"image": "train2014/COCO_train2014_....jpg", "text": "woman in the red shirt"}]``;
  every expression of one image file shares that file's index, so they are ITC positives of each other
  (:func:`read_grounding_train` returns retrieval training records).
- ``refcoco+_val.json`` / ``refcoco+_test.json``: the same with ``"ref_id"``.
- ``dets.json``: ``{"<image id>": [[x, y, w, h, ...], ...]}``, the MAttNet proposals, keyed by the **string** COCO
  image id; only the first 4 numbers are read.
- The REFER annotations: ``refs(unc).p`` (a Python 2 pickle of a list of refs: ``ref_id``, ``ann_id``,
  ``image_id``, ``split``, ``sentences``...) and ``instances.json`` (COCO: image sizes and annotation boxes), read by
  :func:`read_refer`. The pickle is read by :func:`safe_unpickle`, which builds plain containers, strings and
  numbers only and refuses any other object (a pickle can run code when it is loaded), or the refs come from the
  JSON that ``albef data prepare refcoco+`` writes once.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from albef.data.errors import DataError
from albef.data.formats_base import (
    PathLike,
    Record,
    Where,
    describe,
    load_json,
    read_records,
    top_level_object,
)
from albef.data.records import GroundingRecord, RefInfo, RetrievalTrainRecord


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global: only what the pickle opcodes build themselves (dicts, lists, tuples,
    strings, bytes, numbers, booleans, None) can come out of it."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: only plain containers, strings and numbers are allowed"
        )


def safe_unpickle(path: PathLike) -> Any:
    """The plain data of a pickle file (Python 2 strings decoded as UTF-8, else Latin-1); a ``DataError`` naming
    the file for anything else, including a pickle that asks for any class or function."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read the file ({err.strerror or err})") from err
    for encoding in ("utf-8", "latin-1"):
        try:
            return RestrictedUnpickler(io.BytesIO(raw), encoding=encoding).load()
        except UnicodeDecodeError:
            continue
        except pickle.UnpicklingError as err:
            raise DataError(path, f"unsafe or corrupt pickle: {err}") from err
        except (EOFError, ValueError, TypeError, IndexError, KeyError) as err:
            raise DataError(path, f"corrupt pickle ({type(err).__name__}: {err})") from err
    raise DataError(path, "the pickle's strings are neither UTF-8 nor Latin-1")


# -- the loader files ----------------------------------------------------------------------------------------
def read_grounding_train(path: PathLike) -> list[RetrievalTrainRecord]:
    """A grounding training file as retrieval records: ``caption`` is the expression, ``image_id`` the image
    path, ``idx`` the index of the image file in order of first appearance (the official ``img_ids``)."""
    ids: dict[str, int] = {}
    out = []
    for rec in read_records(path):
        image = rec.nonblank("image")
        idx = ids.setdefault(image, len(ids))
        out.append(RetrievalTrainRecord(image=image, caption=rec.nonblank("text"), image_id=image, idx=idx))
    return out


def read_grounding_eval(path: PathLike) -> list[GroundingRecord]:
    """A grounding val/test file: one record per expression, in file order."""
    return [
        GroundingRecord(rec.nonblank("image"), rec.nonblank("text"), rec.integer("ref_id"))
        for rec in read_records(path)
    ]


def read_dets(path: PathLike) -> dict[str, list[list[float]]]:
    """The proposals file: boxes ``[x, y, w, h]`` (extra numbers dropped) by string image id."""
    top = top_level_object(path)
    out: dict[str, list[list[float]]] = {}
    for image_id, boxes in top.raw.items():
        if not isinstance(boxes, list):
            raise top.error(str(image_id), f"expected a list of boxes, got {describe(boxes)}")
        parsed = []
        for n, box in enumerate(boxes):
            if not isinstance(box, list) or len(box) < 4 or not all(_number(v) for v in box[:4]):
                raise top.error(
                    f"{image_id}[{n}]", f"expected [x, y, w, h, ...] numbers, got {describe(box)}"
                )
            parsed.append([float(v) for v in box[:4]])
        out[str(image_id)] = parsed
    return out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- REFER ------------------------------------------------------------------------------------------------------
def read_refer(refs: PathLike, instances: PathLike) -> tuple[dict[int, RefInfo], dict[int, tuple[int, int]]]:
    """The refs (ground-truth box from the ref's annotation) and image sizes ``(height, width)`` of RefCOCO+.

    Args:
        refs: ``refs(unc).p`` (read with :func:`safe_unpickle`) or the JSON list ``albef data prepare`` writes.
        instances: ``instances.json`` (COCO: ``images`` with ``id``/``height``/``width``, ``annotations`` with
            ``id``/``bbox``).
    """
    ref_list = load_json(refs) if str(refs).endswith(".json") else safe_unpickle(refs)
    if not isinstance(ref_list, list):
        raise DataError(refs, f"expected a list of refs, got {type(ref_list).__name__}")
    coco = top_level_object(instances)
    boxes = {ann.integer("id"): _box(ann, "bbox") for ann in coco.objects("annotations")}
    sizes = {
        img.integer("id"): (img.integer("height"), img.integer("width")) for img in coco.objects("images")
    }
    out: dict[int, RefInfo] = {}
    for n, raw in enumerate(ref_list):
        rec = Record(raw, Where(str(refs), index=n))
        ann_id = rec.integer("ann_id")
        if ann_id not in boxes:
            raise rec.error("ann_id", f"annotation {ann_id} is not in {instances}")
        ref_id = rec.integer("ref_id")
        out[ref_id] = RefInfo(ref_id, rec.integer("image_id"), rec.nonblank("split"), boxes[ann_id])
    return out, sizes


def _box(rec: Record, name: str) -> tuple[float, float, float, float]:
    value = rec.get(name)
    if not isinstance(value, list) or len(value) != 4 or not all(_number(v) for v in value):
        raise rec.error(name, f"expected [x, y, w, h] numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]), float(value[3]))


def refs_to_json(refs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The fields of each ref that the evaluation and the readers use, as JSON-ready dicts (``albef data
    prepare refcoco+`` writes them, so the pickle is read once)."""
    keep = ("ref_id", "ann_id", "image_id", "split", "category_id", "file_name")
    out = []
    for ref in refs:
        item = {k: ref[k] for k in keep if k in ref}
        item["sentences"] = [s.get("sent", s.get("raw", "")) for s in ref.get("sentences", [])]
        out.append(item)
    return out
