"""Progress bars for long loops, shown only where a command asked for them.

Library loops wrap their iterables in :func:`track`; it returns them unchanged unless the caller turned bars on
with :func:`progress_enabled` (the CLI does so on rank 0 unless ``--no-progress`` is given). A bar goes to
stderr, so it never mixes with a command's printed results.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("albef_progress", default=False)


@contextlib.contextmanager
def progress_enabled(enabled: bool = True) -> Iterator[None]:
    """Show (or hide) the bars of :func:`track` inside the ``with`` block."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def track(
    iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "batch"
) -> Iterable[T]:
    """``iterable`` with a progress bar when bars are on, else ``iterable`` itself."""
    if not _ENABLED.get():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
