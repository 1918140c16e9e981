"""Readers for the official ALBEF data formats (spec §4.1), one function per format.

Each reader takes a path and returns typed records (``albef.data.records``). Strings are returned raw (the
datasets apply ``pre_caption``/``pre_question``) and image paths as written. Every malformed input raises
:class:`~albef.data.errors.DataError` naming the file, the record and the field.

This module holds the caption formats (pretraining, retrieval, COCO captions, the MacCap Flickr30K layout);
the VQA, NLVR² and SNLI-VE readers live in sibling modules and are re-exported here.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from albef.data.errors import DataError
from albef.data.formats_base import PathLike, Record, describe, read_records, top_level_object
from albef.data.formats_nlvr import (
    nlvr_consistency_groups,
    nlvr_group_key,
    parse_nlvr_identifier,
    read_nlvr,
    read_nlvr_lil,
)
from albef.data.formats_ve import read_ve
from albef.data.formats_vqa import (
    read_answer_list,
    read_vqa_test,
    read_vqa_train,
    read_vqa_v2,
    vqa_answer_weights,
)
from albef.data.records import FalseCaption, ImageId, PretrainRecord, RetrievalEvalSet, RetrievalTrainRecord

__all__ = [
    "nlvr_consistency_groups",
    "nlvr_group_key",
    "parse_nlvr_identifier",
    "read_answer_list",
    "read_coco_captions",
    "read_maccap_flickr",
    "read_nlvr",
    "read_nlvr_lil",
    "read_pretrain",
    "read_retrieval_eval",
    "read_retrieval_train",
    "read_ve",
    "read_vqa_test",
    "read_vqa_train",
    "read_vqa_v2",
    "vqa_answer_weights",
]

FLICKR_IMAGE_DIR = "flickr30k-images"
"""Folder of the Flickr30K images in the official retrieval files (``flickr30k-images/<id>.jpg``)."""


def read_pretrain(path: PathLike) -> list[PretrainRecord]:
    """Read a pretraining list: ``[{"image", "caption": str | [str, ...]}]``.

    Args:
        path: The JSON file (image paths are often absolute in the released files).

    Returns:
        One record per image, in file order; a single caption becomes a 1-tuple.
    """
    return [
        PretrainRecord(image=rec.nonblank("image"), captions=rec.nonblank_or_list("caption"))
        for rec in read_records(path)
    ]


def read_negative_captions(path: PathLike) -> dict[str, tuple[FalseCaption, ...]]:
    """Read captions known to be false of their image: ``{"<image path as in the training file>": [item, ...]}``
    where an item is the false caption alone or ``{"caption": <true of the image>, "negative": <false of it>}``,
    the pair a hard negative was made from (both then join the ITM loss; see :class:`FalseCaption`).

    Not an official file: the synthetic world writes one (``pretrain_negatives.json``, pairs) for the ITM pairs
    of ``data.itm_text_negatives``.
    """
    record = top_level_object(path)
    read: dict[str, tuple[FalseCaption, ...]] = {}
    for image, items in record.raw.items():
        if not isinstance(items, list) or not items:
            raise record.error(image, f"expected a non-empty list, got {describe(items)}")
        made = []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                pair = Record(item, replace(record.where, prefix=f"{image}[{i}]."))
                made.append(FalseCaption(pair.nonblank("negative"), pair.nonblank("caption")))
            elif isinstance(item, str) and item.strip():
                made.append(FalseCaption(item))
            else:
                raise record.error(f"{image}[{i}]", f"expected a non-blank string or a pair, got {item!r}")
        read[image] = tuple(made)
    return read


def read_retrieval_train(path: PathLike) -> list[RetrievalTrainRecord]:
    """Read a retrieval training file: one ``{"image", "caption", "image_id"}`` record per caption.

    ``image_id`` may be any string or number; it is mapped to a contiguous ``idx`` in order of first
    appearance, as the official dataset does (``1`` and ``"1"`` are different ids).

    Args:
        path: The JSON file.

    Returns:
        One record per caption, in file order.
    """
    ids: dict[ImageId, int] = {}
    records = []
    for rec in read_records(path):
        image, caption = rec.nonblank("image"), rec.nonblank("caption")
        image_id = rec.image_id("image_id")
        idx = ids.setdefault(image_id, len(ids))
        records.append(RetrievalTrainRecord(image=image, caption=caption, image_id=image_id, idx=idx))
    return records


def read_retrieval_eval(path: PathLike) -> RetrievalEvalSet:
    """Read a retrieval val/test file: one ``{"image", "caption": [str, ...]}`` record per image.

    ``caption`` must be a list (any non-zero length; COCO has images with 6 captions). A plain string is an
    error: the official code would silently iterate over its characters (ALBEF#72). An empty list is an
    error too, since image-to-text recall is undefined for an image without captions.

    Args:
        path: The JSON file.

    Returns:
        The evaluation set, with text ids running consecutively over images in file order.
    """
    return RetrievalEvalSet.from_groups(
        (rec.nonblank("image"), rec.nonblank_list("caption")) for rec in read_records(path)
    )


def read_maccap_flickr(path: PathLike, image_dir: str = FLICKR_IMAGE_DIR) -> RetrievalEvalSet:
    """Read a Flickr30K split in the MacCap layout: ``[{"split", "image_name", "captions": [str, ...]}]``.

    This is the conversion to the official layout: ``image = image_dir + "/" + image_name`` and
    ``caption = captions``; ``RetrievalEvalSet.to_albef_records()`` gives the official JSON records back.

    Args:
        path: The JSON file.
        image_dir: Folder prepended to ``image_name`` (``""`` keeps the bare name).

    Returns:
        The evaluation set, in file order.
    """
    return RetrievalEvalSet.from_groups(
        (posixpath.join(image_dir, rec.nonblank("image_name")), rec.nonblank_list("captions"))
        for rec in read_records(path)
    )


def _coco_images(top: Record) -> dict[int, int]:
    """Validate ``images``; map each image id to its position in the list."""
    positions: dict[int, int] = {}
    for position, rec in enumerate(top.objects("images")):
        image_id = rec.integer("id")
        if image_id in positions:
            raise rec.error("id", f"duplicate image id {image_id}")
        rec.nonblank("file_name")
        positions[image_id] = position
    return positions


def _coco_captioned(top: Record, images: dict[int, int]) -> set[int]:
    """Validate ``annotations``; return the ids of the images that have at least one caption."""
    ann_ids: set[int] = set()
    captioned: set[int] = set()
    for rec in top.objects("annotations"):
        ann_id, image_id = rec.integer("id"), rec.integer("image_id")
        if ann_id in ann_ids:
            raise rec.error("id", f"duplicate annotation id {ann_id}")
        if image_id not in images:
            raise rec.error("image_id", f"no image with id {image_id} in 'images'")
        rec.nonblank("caption")
        ann_ids.add(ann_id)
        captioned.add(image_id)
    return captioned


def read_coco_captions(path: PathLike) -> RetrievalEvalSet:
    """Read a COCO-format caption file (``{"images": [...], "annotations": [{id, image_id, caption}]}``).

    The file is validated, then indexed with ``pycocotools.coco.COCO`` (its progress prints are silenced).
    Images are ordered by image id and each image's captions by annotation id; the image path is
    ``file_name``.

    Args:
        path: The JSON file.

    Returns:
        The evaluation set.

    Raises:
        DataError: On any malformed record, and for an image without captions.
    """
    from pycocotools.coco import COCO  # deferred: only this reader needs pycocotools

    top = top_level_object(path)
    images = _coco_images(top)
    captioned = _coco_captioned(top, images)
    missing = [image_id for image_id in images if image_id not in captioned]
    if missing:
        message = f"image {missing[0]} has no caption annotation ({len(missing)} image(s) without captions)"
        raise DataError(path, message, index=images[missing[0]], section="images", field="id")
    coco = COCO()
    coco.dataset = top.raw
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return RetrievalEvalSet.from_groups(_coco_groups(coco, sorted(images)))


def _coco_groups(coco: Any, image_ids: Iterable[int]) -> Iterator[tuple[str, list[str]]]:
    for image_id in image_ids:
        file_name: str = coco.loadImgs([image_id])[0]["file_name"]
        annotations = coco.loadAnns(sorted(coco.getAnnIds(imgIds=[image_id])))
        yield file_name, [ann["caption"] for ann in annotations]
