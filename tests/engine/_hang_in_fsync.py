"""Helper of ``test_checkpointing``: write a large checkpoint and hang once its bytes are on disk.

``python _hang_in_fsync.py TARGET READY``: ``os.fsync`` is replaced by a function that touches READY and
sleeps, so the test can SIGKILL the process after ``torch.save`` wrote the temporary file but before the
rename.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from albef.engine import checkpointing as ckpt
from albef.fileio import atomic_torch_save


def _hang(fd: int) -> None:
    Path(sys.argv[2]).touch()
    time.sleep(600)


if __name__ == "__main__":
    ckpt.os.fsync = _hang  # type: ignore[attr-defined]  # ckpt.os is the os module: the whole process
    payload = {"weights": torch.randn(4_000_000), "step": 6}  # 16 MB
    atomic_torch_save(payload, sys.argv[1])
    os._exit(3)  # never reached while fsync hangs
