"""Reader for SNLI-VE in the ALBEF layout (``ve_train.json``, ``ve_dev.json``, ``ve_test.json``)."""

from __future__ import annotations

from albef.data.formats_base import PathLike, Record, read_records
from albef.data.records import VE_LABELS, VERecord

VE_IMAGE_SUFFIX = ".jpg"
"""The files give a Flickr30K id without extension; the official dataset appends this."""


def _ve_record(rec: Record) -> VERecord:
    image = rec.nonblank("image")
    if image.lower().endswith(VE_IMAGE_SUFFIX):
        # The official code would look for "<id>.jpg.jpg"; fail here rather than at image loading.
        raise rec.error("image", f"expected a Flickr30K id without extension, got {image!r}")
    return VERecord(
        image=image + VE_IMAGE_SUFFIX,
        sentence=rec.nonblank("sentence"),
        label=rec.choice("label", VE_LABELS),
    )


def read_ve(path: PathLike) -> list[VERecord]:
    """Read an SNLI-VE file: ``[{"image": "<flickr id>", "sentence", "label"}]``.

    Args:
        path: The JSON file.

    Returns:
        One record per example; ``image`` gets ``.jpg`` appended and ``label`` is 2 entailment, 1 neutral,
        0 contradiction.
    """
    return [_ve_record(rec) for rec in read_records(path)]
