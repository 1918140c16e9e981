"""Readers for NLVR²: ALBEF's ``nlvr_*.json`` and the lil-lab JSON-lines release, plus consistency groups.

lil-lab identifiers read ``split-setid-pairid-sentenceid`` (``dev-850-0-0``). One sentence was written for
a set of image pairs and then validated against each pair of its set, so the examples that share a sentence
are exactly those whose identifiers differ only in the *pair id*. Those are NLVR²'s consistency groups
(a group is consistent when every one of its examples is predicted correctly). On the real files this
gives 2,018 groups for the 6,982 dev examples and 1,995 for the 6,967 test-P examples, the counts
published with the data, and every group holds a single sentence.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from albef.data.formats_base import PathLike, Record, read_json_lines, read_records
from albef.data.records import NLVR_LABELS, NLVRRecord


class NLVRIdentifier(NamedTuple):
    """The parts of a lil-lab NLVR² identifier ``split-setid-pairid-sentenceid``."""

    split: str
    set_id: int
    pair_id: int
    sentence_id: int


def parse_nlvr_identifier(identifier: str) -> NLVRIdentifier:
    """Split a lil-lab identifier such as ``dev-850-0-0`` into its parts.

    Args:
        identifier: ``split-setid-pairid-sentenceid``; the split (``train``, ``dev``, ``test1``) has no dash.

    Returns:
        The parsed identifier.

    Raises:
        ValueError: If the identifier does not have that form.
    """
    parts = identifier.split("-")
    if len(parts) != 4 or not parts[0] or not all(p.isdigit() for p in parts[1:]):
        raise ValueError(f"expected an identifier 'split-setid-pairid-sentenceid', got {identifier!r}")
    return NLVRIdentifier(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))


def nlvr_group_key(identifier: str) -> str:
    """Consistency-group key of an example: its identifier with the pair id replaced by ``*``.

    Args:
        identifier: A lil-lab identifier, e.g. ``dev-850-0-0``.

    Returns:
        The key, e.g. ``dev-850-*-0`` (shared by ``dev-850-1-0``, ``dev-850-2-0``, ...).
    """
    split, set_id, _, sentence_id = parse_nlvr_identifier(identifier)
    return f"{split}-{set_id}-*-{sentence_id}"


def nlvr_consistency_groups(identifiers: Iterable[str]) -> dict[str, list[int]]:
    """Group examples that share a sentence (see :func:`nlvr_group_key`).

    Args:
        identifiers: The examples' lil-lab identifiers, in dataset order.

    Returns:
        Group key -> positions of its examples, in first-appearance order of the groups.
    """
    groups: dict[str, list[int]] = {}
    for position, identifier in enumerate(identifiers):
        groups.setdefault(nlvr_group_key(identifier), []).append(position)
    return groups


def lil_image_names(identifier: NLVRIdentifier) -> tuple[str, str]:
    """The conventional image file names of an example: ``split-setid-pairid-img0.png`` and ``-img1.png``.

    Only names: the training images are spread over numbered sub-folders that the identifier does not give.
    """
    stem = f"{identifier.split}-{identifier.set_id}-{identifier.pair_id}"
    return f"{stem}-img0.png", f"{stem}-img1.png"


def read_nlvr(path: PathLike) -> list[NLVRRecord]:
    """Read an ALBEF NLVR² file: ``[{"images": [p0, p1], "sentence", "label": "True" | "False"}]``.

    The label must be the *string* ``"True"`` or ``"False"`` (the official code would read a JSON ``true``
    as False). An optional ``identifier`` is kept.

    Args:
        path: The JSON file.

    Returns:
        One record per example, in file order.
    """
    return [_albef_record(rec) for rec in read_records(path)]


def _albef_record(rec: Record) -> NLVRRecord:
    images = rec.nonblank_list("images")
    if len(images) != 2:
        raise rec.error("images", f"expected 2 image paths, got {len(images)}")
    return NLVRRecord(
        images=(images[0], images[1]),
        sentence=rec.nonblank("sentence"),
        label=rec.choice("label", NLVR_LABELS),
        identifier=rec.optional_string("identifier"),
    )


def read_nlvr_lil(path: PathLike) -> list[NLVRRecord]:
    """Read the lil-lab NLVR² release (``nlvr2/data/{train,dev,test1}.json``, JSON lines).

    Args:
        path: The JSON-lines file.

    Returns:
        One record per line, with image names from :func:`lil_image_names` and the identifier kept.
    """
    return [_lil_record(rec) for rec in read_json_lines(path)]


def _lil_record(rec: Record) -> NLVRRecord:
    identifier = rec.nonblank("identifier")
    try:
        parsed = parse_nlvr_identifier(identifier)
    except ValueError as err:
        raise rec.error("identifier", str(err)) from err
    return NLVRRecord(
        images=lil_image_names(parsed),
        sentence=rec.nonblank("sentence"),
        label=rec.choice("label", NLVR_LABELS),
        identifier=identifier,
    )
