"""pre_caption / pre_question against hand-computed strings (spec §4.2)."""

from __future__ import annotations

import pytest

from albef.data.text import DELETED_CHARS, pre_caption, pre_question


def test_spec_example() -> None:
    assert pre_caption("Don't-stop!") == "dont stop"


@pytest.mark.parametrize("char", list(",.'!?\"()*#:;~"))
def test_each_deleted_character(char: str) -> None:
    assert pre_caption(f"a{char}b c") == "ab c"
    assert pre_question(f"a{char}b c") == "ab c"


def test_deleted_set_is_exactly_the_official_one() -> None:
    assert sorted(DELETED_CHARS) == sorted(",.'!?\"()*#:;~")
    # Characters outside the set survive: other punctuation, digits, non-ASCII letters.
    assert pre_caption("a&b 3+4 café's") == "a&b 3+4 cafés"


def test_dash_and_slash_become_spaces() -> None:
    assert pre_caption("black-and-white/grey") == "black and white grey"
    assert pre_question("black-and-white/grey") == "black and white grey"


def test_dash_runs_collapse_only_in_captions() -> None:
    assert pre_caption("a - b") == "a b"  # "a   b" collapsed
    assert pre_question("a - b") == "a   b"


def test_person_token() -> None:
    assert pre_caption("A <person> rides a horse.") == "a person rides a horse"
    assert pre_caption("<PERSON> waves") == "person waves"  # lower-cased first
    assert pre_question("Is <person> here?") == "is <person> here"  # questions keep it


def test_whitespace_collapse() -> None:
    assert pre_caption("a   b\t\tc \n d") == "a b c d"
    # A *single* tab or newline is not a run of 2+, so it stays (official regex \s{2,}).
    assert pre_caption("a\tb") == "a\tb"
    assert pre_caption("   leading and trailing   ") == "leading and trailing"


def test_trailing_newline() -> None:
    assert pre_caption("A dog.\n") == "a dog"
    assert pre_caption("A dog \n") == "a dog"  # " \n" is a run: collapsed to " ", then stripped
    # Real COCO caption with a trailing space.
    assert pre_caption("A man with a red helmet on a small moped on a dirt road. ") == (
        "a man with a red helmet on a small moped on a dirt road"
    )


def test_max_words() -> None:
    words = [f"w{i}" for i in range(40)]
    assert pre_caption(" ".join(words)) == " ".join(words[:30])
    assert pre_caption("One two three four", max_words=3) == "one two three"
    assert pre_caption("one two three", max_words=3) == "one two three"
    assert pre_question(" ".join(words)) == " ".join(words[:40])  # default 50
    assert pre_question(" ".join(words), max_words=30) == " ".join(words[:30])


def test_empty_after_cleaning_is_empty_string() -> None:
    assert pre_caption("...!?") == ""
    assert pre_caption("   ") == ""
    assert pre_question("?") == ""


def test_pre_question_keeps_runs_and_left_side() -> None:
    assert pre_question("What  is  it?") == "what  is  it"
    assert pre_question("  How many?  ") == "  how many"
    # Only spaces are right-stripped, not newlines.
    assert pre_question("Why?\n") == "why\n"


def test_pre_question_truncation_counts_empty_words() -> None:
    # "a  b c".split(" ") == ["a", "", "b", "c"]: the empty item between the two spaces is a word.
    assert pre_question("A  b c", max_words=2) == "a "
    assert pre_question("A  b c", max_words=3) == "a  b"
