"""Helper of ``test_resumable_eval``: ``albef evaluate ARGS`` that hangs after the re-rank's first save.

``python _rerank_hang.py READY evaluate retrieval ...``: once the partial results have been saved for the
first time, touches READY and sleeps (the test SIGKILLs it there).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from albef.cli.main import main
from albef.evaluation.partial import PartialScores

READY = Path(sys.argv[1])
_save = PartialScores.save


def _save_then_hang(self: PartialScores, *args: object) -> None:
    _save(self, *args)  # type: ignore[arg-type]
    READY.touch()
    time.sleep(600)


if __name__ == "__main__":
    PartialScores.save = _save_then_hang  # type: ignore[method-assign]
    sys.exit(main(sys.argv[2:]))
