"""The one error type raised for malformed data files.

A ``DataError`` always names the file and, where it applies, the record (0-based position in the file's
list, or in the named section such as ``annotations``), the JSON-lines line number (1-based) and the field,
so that the CLI can print it as a single actionable line, e.g.::

    data/coco_test.json: record 17: field 'caption': expected a list of strings, got str
"""

from __future__ import annotations

import os

from albef import errors


class DataError(errors.DataError):
    """A data file is missing, unparsable or has a record that does not follow its format.

    Attributes:
        path: The file, as given by the caller.
        message: What is wrong, without the location.
        index: 0-based index of the offending record, or ``None`` for file-level problems.
        field: The offending field, indexed for nested values (``answers[3].answer``), or ``None``.
        line: 1-based line number (JSON-lines files and JSON syntax errors), or ``None``.
        section: The list the record belongs to when a file holds several (``annotations``), or ``None``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        message: str,
        *,
        index: int | None = None,
        field: str | None = None,
        line: int | None = None,
        section: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.message = message
        self.index = index
        self.field = field
        self.line = line
        self.section = section
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.path]
        location = ""
        if self.index is not None:
            location = (
                f"record {self.index}" if self.section is None else f"{self.section} record {self.index}"
            )
        if self.line is not None:
            location = f"{location} (line {self.line})" if location else f"line {self.line}"
        if location:
            parts.append(location)
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        parts.append(self.message)
        return ": ".join(parts)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments are not restored by the default exception pickling; DataLoader workers
        # send exceptions between processes, so keep them picklable.
        return (_rebuild, (self.path, self.message, self.index, self.field, self.line, self.section))


def _rebuild(
    path: str, message: str, index: int | None, field: str | None, line: int | None, section: str | None
) -> DataError:
    return DataError(path, message, index=index, field=field, line=line, section=section)
