"""Loading and validation helpers shared by the format readers.

Every check raises :class:`~albef.data.errors.DataError` with the file, record and field filled in, so that
each reader only states *what* it expects (``rec.nonblank("caption")``) and never repeats *how* to check it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from albef.data.errors import DataError
from albef.data.records import ImageId

PathLike = str | os.PathLike[str]
T = TypeVar("T")

_MAX_SHOWN = 60
_JSON_LINES_HINT = " (several JSON values: is this a JSON-lines file?)"
"""Added to the "Extra data" parse error, the usual symptom of reading JSON lines as one document."""


def describe(value: object) -> str:
    """Name a JSON value's type the way the error messages do (``null`` for None, else the Python type)."""
    return "null" if value is None else type(value).__name__


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def load_json(path: PathLike) -> Any:
    """Parse a whole JSON file.

    Args:
        path: The file.

    Returns:
        The decoded JSON value.

    Raises:
        DataError: If the file cannot be read or is not valid UTF-8 JSON.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise DataError(path, f"cannot read file: {err.strerror or err}") from err
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        hint = _JSON_LINES_HINT if err.msg == "Extra data" else ""
        raise DataError(
            path, f"invalid JSON at column {err.colno}: {err.msg}{hint}", line=err.lineno
        ) from err
    except UnicodeDecodeError as err:
        raise DataError(path, f"not valid UTF-8 text: {err.reason} at byte {err.start}") from err


@dataclass(frozen=True)
class Where:
    """Location of a JSON value inside a file, used to build errors."""

    path: PathLike
    index: int | None = None
    section: str | None = None
    line: int | None = None
    prefix: str = ""
    """Field path of the enclosing value inside the record, e.g. ``answers[3].`` (empty at record level)."""

    def error(self, field: str | None, message: str) -> DataError:
        """Build the error about ``field`` (relative to this location; ``None``: the value itself)."""
        full = f"{self.prefix}{field}" if field is not None else (self.prefix.rstrip(".") or None)
        return DataError(
            self.path, message, index=self.index, field=full, line=self.line, section=self.section
        )


class Record:
    """A JSON object from a data file, with typed field access that raises located ``DataError``s."""

    def __init__(self, raw: object, where: Where) -> None:
        if not isinstance(raw, dict):
            top = where.index is None and not where.prefix
            place = " at the top level" if top else ""
            raise where.error(None, f"expected a JSON object{place}, got {describe(raw)}")
        self.raw: dict[str, Any] = raw
        self.where = where

    def error(self, field: str | None, message: str) -> DataError:
        """Build a ``DataError`` about ``field`` of this record."""
        return self.where.error(field, message)

    def has(self, name: str) -> bool:
        """Whether the field is present and not null."""
        return self.raw.get(name) is not None

    def get(self, name: str) -> Any:
        """The field's value; a missing field is an error."""
        if name not in self.raw:
            raise self.error(name, "missing")
        return self.raw[name]

    def _typed(self, name: str, check: Callable[[Any], bool], expected: str) -> Any:
        value = self.get(name)
        if not check(value):
            raise self.error(name, f"expected {expected}, got {describe(value)}")
        return value

    def string(self, name: str) -> str:
        """A string field (may be empty)."""
        return self._typed(name, lambda v: isinstance(v, str), "a string")

    def nonblank(self, name: str) -> str:
        """A string field that is not empty after ``strip()``; returned unchanged."""
        value = self.string(name)
        if not value.strip():
            raise self.error(name, f"empty string ({value!r})")
        return value

    def integer(self, name: str) -> int:
        """An integer field (booleans are rejected)."""
        return self._typed(name, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")

    def image_id(self, name: str) -> ImageId:
        """A hashable JSON scalar usable as an id: a string or a number (not null, not a boolean)."""
        return self._typed(
            name, lambda v: isinstance(v, str | int | float) and not isinstance(v, bool), "a string or number"
        )

    def optional_string(self, name: str) -> str | None:
        """A string field that may be missing or null."""
        return self.string(name) if self.has(name) else None

    def optional_integer(self, name: str) -> int | None:
        """An integer field that may be missing or null."""
        return self.integer(name) if self.has(name) else None

    def choice(self, name: str, choices: Mapping[str, T]) -> T:
        """A string field restricted to the keys of ``choices``; returns the mapped value."""
        value = self.get(name)
        if isinstance(value, str) and value in choices:
            return choices[value]
        options = ", ".join(repr(c) for c in choices)
        raise self.error(name, f"expected one of {options}, got {_shown(value)} ({describe(value)})")

    def _list(self, name: str, nonempty_items: bool) -> tuple[str, ...]:
        value = self._typed(name, lambda v: isinstance(v, list), "a list of strings")
        if not value:
            raise self.error(name, "empty list")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{name}[{i}]", f"expected a string, got {describe(item)}")
            if nonempty_items and not item.strip():
                raise self.error(f"{name}[{i}]", f"empty string ({item!r})")
        return tuple(value)

    def string_list(self, name: str) -> tuple[str, ...]:
        """A non-empty list of strings (the strings may be empty)."""
        return self._list(name, nonempty_items=False)

    def nonblank_list(self, name: str) -> tuple[str, ...]:
        """A non-empty list of strings, none of them empty after ``strip()``."""
        return self._list(name, nonempty_items=True)

    def nonblank_or_list(self, name: str) -> tuple[str, ...]:
        """Either one non-blank string or a non-empty list of them, returned as a tuple."""
        if isinstance(self.get(name), str):
            return (self.nonblank(name),)
        return self._list(name, nonempty_items=True)

    def objects(self, name: str) -> Iterator[Record]:
        """Iterate over a field holding a list of objects, each as a located ``Record``.

        At the top level of a file the items become numbered records of section ``name``; inside a record
        they are addressed by field path (``answers[3].answer``).
        """
        value = self._typed(name, lambda v: isinstance(v, list), "a list of objects")
        nested = self.where.index is not None
        for i, item in enumerate(value):
            if nested:
                where = replace(self.where, prefix=f"{self.where.prefix}{name}[{i}].")
            else:
                where = replace(self.where, index=i, section=name)
            yield Record(item, where)


def top_level_object(path: PathLike) -> Record:
    """Load a file whose top level must be a JSON object (VQA v2, COCO) as a ``Record``."""
    return Record(load_json(path), Where(path))


def read_records(path: PathLike) -> Iterator[Record]:
    """Load a file whose top level must be a JSON list of objects and iterate over its records; a ``.tar``
    shard (or a brace pattern of shards) gives one record per sample (:mod:`albef.data.shards`)."""
    from albef.data.shards import is_shard_spec, shard_records

    if is_shard_spec(path):
        for shard, position, raw in shard_records(path):
            yield Record(raw, Where(shard, index=position))
        return
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON list of records at the top level, got {describe(data)}")
    for i, item in enumerate(data):
        yield Record(item, Where(path, index=i))


def read_json_lines(path: PathLike) -> Iterator[Record]:
    """Iterate over a JSON-lines file (one object per line; blank lines are skipped).

    Record indices count the non-blank lines from 0; errors also give the 1-based line number.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed in the finally below (generator)
    except OSError as err:
        raise DataError(path, f"cannot read file: {err.strerror or err}") from err
    try:
        index = 0
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DataError(path, f"invalid JSON line: {err}", index=index, line=line_no) from err
            yield Record(item, Where(path, index=index, line=line_no))
            index += 1
    finally:
        handle.close()
