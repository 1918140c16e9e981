"""Progress bars: shown on evaluation loops only where the command asked, on stderr."""

from __future__ import annotations

import pytest

from albef.progress import progress_enabled, track


def test_track_is_a_no_op_unless_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    items = [1, 2, 3]
    assert track(items, desc="x") is items
    with progress_enabled(True):
        assert list(track(items, total=3, desc="encode images")) == items
        with progress_enabled(False):
            assert track(items) is items
    assert track(items) is items
    captured = capsys.readouterr()
    assert "encode images:   0%|" in captured.err and "0/3" in captured.err and captured.out == ""
