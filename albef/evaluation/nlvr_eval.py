"""NLVR² and classification metrics, the predictions file and the official NLVR² scoring, as pure functions.

NLVR² reports two figures (lil-lab ``nlvr2/eval/metrics.py``):

* **accuracy**: the fraction of examples whose prediction equals the label;
* **consistency**: the fraction of *sentences* every one of whose image pairs is predicted correctly. The
  examples of a sentence are those whose identifiers ``split-setid-pairid-sentenceid`` differ only in the
  pair id (:func:`albef.data.formats.nlvr_group_key`).

The official ALBEF code computes only the accuracy (spec §5.3). Predictions are exchanged as the official CSV:
one ``identifier,prediction`` line per example, the prediction spelled as the labels (``True``/``False``),
no header. :func:`score_predictions` scores such a file exactly as the official script: the last line of an
identifier wins, predictions compare with the labels case-insensitively, and a missing identifier is an
error (the official script prints the missing ones and stops).

Every fraction here is in ``[0, 1]``; reports multiply by 100.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch
from torch import Tensor

from albef.data.formats import nlvr_consistency_groups, read_nlvr_lil
from albef.data.records import NLVRRecord
from albef.errors import DataError

TRUE, FALSE = "True", "False"
"""How the NLVR² files spell the labels (and the predictions file the predictions)."""

MISSING_SHOWN = 20
"""How many missing identifiers an error message lists."""

_IMAGE_STEM = re.compile(r"^(?P<split>[A-Za-z0-9]+)-(?P<set>\d+)-(?P<pair>\d+)-img0$")


# -- accuracy and consistency --------------------------------------------------------------------------------
def accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Fraction of ``predictions == labels`` (both (N,) integer class indices); 0 for no examples."""
    if predictions.shape != labels.shape:
        raise ValueError(f"{tuple(predictions.shape)} predictions for {tuple(labels.shape)} labels")
    if labels.numel() == 0:
        return 0.0
    return float((predictions == labels).float().mean())


def per_class_accuracy(predictions: Tensor, labels: Tensor, num_classes: int) -> list[float | None]:
    """Accuracy over the examples of each class (``None`` for a class with no example).

    Args:
        predictions: (N,) predicted class indices.
        labels: (N,) true class indices in ``[0, num_classes)``.
        num_classes: Number of classes.

    Returns:
        One fraction per class, in class-index order.
    """
    out: list[float | None] = []
    for cls in range(num_classes):
        mask = labels == cls
        out.append(float((predictions[mask] == cls).float().mean()) if mask.any() else None)
    return out


def consistency(correct: Sequence[bool], groups: Mapping[str, Sequence[int]]) -> float:
    """Fraction of groups all of whose examples are correct.

    Args:
        correct: Whether each example (by position) was predicted correctly.
        groups: Group key -> positions of its examples (:func:`albef.data.formats.nlvr_consistency_groups`).

    Returns:
        The fraction in ``[0, 1]`` (0 when there is no group).
    """
    if not groups:
        return 0.0
    consistent = sum(all(correct[i] for i in members) for members in groups.values())
    return consistent / len(groups)


@dataclass(frozen=True)
class NLVRScore:
    """Accuracy and consistency of one set of NLVR² predictions (fractions).

    Attributes:
        accuracy: Correct examples / examples.
        consistency: Consistent sentences / sentences.
        examples: Number of examples scored.
        groups: Number of sentences (consistency groups).
    """

    accuracy: float
    consistency: float
    examples: int
    groups: int


def score_nlvr(correct: Sequence[bool], identifiers: Sequence[str]) -> NLVRScore:
    """Accuracy and consistency of per-example outcomes grouped by their lil-lab identifiers.

    Args:
        correct: Whether each example was predicted correctly.
        identifiers: The examples' identifiers (``split-setid-pairid-sentenceid``), in the same order.
    """
    if len(correct) != len(identifiers):
        raise ValueError(f"{len(correct)} outcomes for {len(identifiers)} identifiers")
    groups = nlvr_consistency_groups(identifiers)
    acc = sum(bool(c) for c in correct) / len(correct) if correct else 0.0
    return NLVRScore(acc, consistency(correct, groups), len(correct), len(groups))


# -- identifiers of ALBEF-format records ---------------------------------------------------------------------
def example_identifiers(records: Sequence[NLVRRecord]) -> tuple[list[str], str]:
    """The lil-lab identifier of every record, and where they came from.

    ALBEF's ``nlvr_*.json`` files carry no identifier, but their images keep the lil-lab names
    ``split-setid-pairid-img0.png``. A missing sentence id is then derived: the sentences of one set are
    numbered 0, 1, ... in order of first appearance, so consistency groups are exact (one group per sentence
    of a set); the numbers match lil-lab's when the file lists each set's sentences in their order.

    Returns:
        ``(identifiers, source)``: ``source`` is ``"file"`` (every record had one), ``"images"`` (derived
        from the image names as above) or ``"sentences"`` (image names without the lil-lab pattern:
        ``x-<sentence number>-<position>-0``, so that examples group by identical sentence text; such
        identifiers are ours only and cannot be scored against lil-lab labels).
    """
    if all(r.identifier for r in records):
        return [str(r.identifier) for r in records], "file"
    stems = [_IMAGE_STEM.match(PurePosixPath(r.images[0].replace("\\", "/")).stem) for r in records]
    sentence_ids: dict[tuple[str, ...], dict[str, int]] = {}
    if all(stems):
        out = []
        for record, match in zip(records, stems, strict=True):
            assert match is not None
            numbers = sentence_ids.setdefault((match["split"], match["set"]), {})
            number = numbers.setdefault(record.sentence, len(numbers))
            out.append(f"{match['split']}-{match['set']}-{match['pair']}-{number}")
        return out, "images"
    numbers = sentence_ids.setdefault((), {})
    return [
        f"x-{numbers.setdefault(r.sentence, len(numbers))}-{position}-0" for position, r in enumerate(records)
    ], "sentences"


# -- the predictions file ------------------------------------------------------------------------------------
def label_string(value: bool) -> str:
    """``True`` -> ``"True"``, as the NLVR² files spell labels."""
    return TRUE if value else FALSE


def format_predictions(identifiers: Sequence[str], predictions: Sequence[bool]) -> str:
    """The official predictions CSV: ``identifier,True|False`` per line, no header."""
    if len(identifiers) != len(predictions):
        raise ValueError(f"{len(identifiers)} identifiers for {len(predictions)} predictions")
    for identifier in identifiers:
        if "," in identifier or "\n" in identifier:
            raise ValueError(f"identifier {identifier!r} cannot be written to a CSV line")
    return "".join(f"{i},{label_string(p)}\n" for i, p in zip(identifiers, predictions, strict=True))


def write_predictions(
    path: str | os.PathLike[str], identifiers: Sequence[str], predictions: Sequence[bool]
) -> Path:
    """Write :func:`format_predictions` to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_predictions(identifiers, predictions), encoding="utf-8")
    return path


def parse_predictions(text: str) -> dict[str, str]:
    """Identifier -> prediction string, from a CSV as the official script reads it, but strict.

    Each line is stripped and split on commas: the first field is the identifier, the second the
    prediction. Blank lines are skipped (the official script would crash on them). Where the official script
    would score silently, this refuses: a prediction that is not ``True``/``False`` (any case; the official
    script counts it as wrong) and an identifier given twice (the official script keeps the last one).

    Raises:
        ValueError: A malformed line, an unknown prediction or a repeated identifier (naming the 1-based line).
    """
    predictions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.strip().split(",")
        if fields == [""]:
            continue
        if len(fields) < 2:
            raise ValueError(f"line {number}: expected 'identifier,prediction', got {line.strip()!r}")
        identifier, prediction = fields[0], fields[1]
        if prediction.strip().lower() not in ("true", "false"):
            raise ValueError(
                f"line {number}: prediction {prediction!r} of {identifier!r} is not True or False"
            )
        if identifier in first_line:
            raise ValueError(
                f"line {number}: identifier {identifier!r} is predicted again (first on line {first_line[identifier]})"
            )
        first_line[identifier] = number
        predictions[identifier] = prediction.strip()
    return predictions


def read_predictions(path: str | os.PathLike[str]) -> dict[str, str]:
    """:func:`parse_predictions` of a file (errors name the file)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{path}: cannot read the predictions file ({err.strerror or err})") from err
    try:
        return parse_predictions(text)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


# -- official scoring ----------------------------------------------------------------------------------------
class MissingPredictionsError(DataError):
    """Some labelled examples have no prediction; ``missing`` lists their identifiers in label order."""

    def __init__(self, missing: Sequence[str], total: int) -> None:
        self.missing = list(missing)
        shown = ", ".join(self.missing[:MISSING_SHOWN])
        more = (
            f", ... ({len(self.missing) - MISSING_SHOWN} more)" if len(self.missing) > MISSING_SHOWN else ""
        )
        super().__init__(
            f"{len(self.missing)} of {total} labelled examples have no prediction: {shown}{more}"
        )


def score_predictions(predictions: Mapping[str, str], labels: Sequence[tuple[str, str]]) -> NLVRScore:
    """Score predictions exactly as lil-lab's ``nlvr2/eval/metrics.py``.

    Args:
        predictions: Identifier -> prediction string (:func:`parse_predictions`); extra identifiers are ignored.
        labels: ``(identifier, label string)`` of every labelled example, in file order (each identifier
            once).

    Returns:
        Accuracy (correct / examples) and consistency (sentences whose examples are all correct / sentences).

    Raises:
        MissingPredictionsError: Any labelled identifier has no prediction.
        DataError: An identifier appears twice in ``labels``.
    """
    seen: set[str] = set()
    for identifier, _ in labels:
        if identifier in seen:
            raise DataError(f"the labels name identifier {identifier!r} twice; each example must appear once")
        seen.add(identifier)
    missing = [identifier for identifier, _ in labels if identifier not in predictions]
    if missing:
        raise MissingPredictionsError(missing, len(labels))
    correct = [predictions[i].lower() == label.lower() for i, label in labels]
    return score_nlvr(correct, [identifier for identifier, _ in labels])


def read_labels(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(identifier, "True"|"False")`` of every example of a lil-lab JSON-lines file, in file order."""
    return [(str(r.identifier), label_string(r.label)) for r in read_nlvr_lil(path)]


def predicted_true(logits: Tensor) -> list[bool]:
    """NLVR² logits (N, 2) -> whether each statement is predicted true (class 1; ties go to class 0)."""
    return [bool(v) for v in torch.argmax(logits, dim=1).eq(1).tolist()]
