"""Caption and question cleaning, exactly as the official ``dataset/utils.py`` does it.

Both functions are pure: they never raise on odd input, and an input that cleans to nothing gives ``''``
(as the official code does). Rejecting empty captions is the readers' job (``albef.data.formats``).

The two differ on purpose (spec §4.2): ``pre_caption`` also maps ``<person>`` to ``person``, collapses
whitespace runs and strips both ends; ``pre_question`` only right-strips spaces, so runs of spaces and leading
spaces survive (and count as empty "words" in the truncation).
"""

from __future__ import annotations

import re

DELETED_CHARS = ",.'!?\"()*#:;~"
"""Characters removed outright by both functions."""

SPACED_CHARS = "-/"
"""Characters replaced by a single space by both functions."""

MAX_CAPTION_WORDS = 30
MAX_QUESTION_WORDS = 50
"""The official test-time question limit; VQA training uses 30."""

_TABLE = str.maketrans(SPACED_CHARS, " " * len(SPACED_CHARS), DELETED_CHARS)
_WHITESPACE_RUN = re.compile(r"\s{2,}")


def _keep_words(text: str, max_words: int) -> str:
    """Keep the first ``max_words`` items of ``text.split(' ')`` (empty items count, as officially)."""
    words = text.split(" ")
    if len(words) > max_words:
        return " ".join(words[:max_words])
    return text


def pre_caption(text: str, max_words: int = MAX_CAPTION_WORDS) -> str:
    """Clean a caption or sentence the official way.

    Steps: lower-case; delete ``, . ' ! ? " ( ) * # : ; ~``; replace ``-`` and ``/`` with a space; replace
    ``<person>`` with ``person``; collapse each run of 2+ whitespace characters to one space; strip trailing
    newlines, then spaces on both sides; keep the first ``max_words`` space-separated words.

    Args:
        text: The raw caption.
        max_words: Number of words kept.

    Returns:
        The cleaned caption, e.g. ``"Don't-stop!"`` -> ``"dont stop"``; ``''`` if nothing is left.
    """
    cleaned = text.lower().translate(_TABLE).replace("<person>", "person")
    cleaned = _WHITESPACE_RUN.sub(" ", cleaned)
    cleaned = cleaned.rstrip("\n").strip(" ")
    return _keep_words(cleaned, max_words)


def pre_question(text: str, max_words: int = MAX_QUESTION_WORDS) -> str:
    """Clean a VQA question the official way.

    Steps: lower-case; delete the same characters as :func:`pre_caption`; replace ``-`` and ``/`` with a
    space; strip spaces on the right only; keep the first ``max_words`` items of ``split(' ')``. Whitespace
    runs are *not* collapsed, the left side is *not* stripped and ``<person>`` is left alone.

    Args:
        text: The raw question.
        max_words: Number of words kept (official: 30 for training, 50 at test time).

    Returns:
        The cleaned question.
    """
    cleaned = text.lower().translate(_TABLE).rstrip(" ")
    return _keep_words(cleaned, max_words)
