"""``file_sha256``: the digest of a file's content, computed once per unchanged file in a process."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from albef.reporting import environment
from albef.reporting.environment import file_sha256


def test_a_file_is_hashed_once_until_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(b"a" * 1000)
    assert file_sha256(path, chunk_bytes=64) == hashlib.sha256(b"a" * 1000).hexdigest()
    hashed = dict(environment._HASHED)
    assert file_sha256(path) == hashlib.sha256(b"a" * 1000).hexdigest() and hashed == environment._HASHED
    path.write_bytes(b"b" * 1000)  # same size: the new modification time tells it apart
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_sha256(path) == hashlib.sha256(b"b" * 1000).hexdigest()
