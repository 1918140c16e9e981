"""Helper of ``test_resumable_eval``: ``albef evaluate ARGS`` that hangs after its first save of partial results.

``python _rerank_hang.py READY evaluate retrieval|vqa ...``: once the re-rank scores or the VQA answers have
been saved for the first time, touches READY and sleeps (the test SIGKILLs it there).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from albef.cli.main import main
from albef.evaluation.partial import PartialAnswers, PartialScores

READY = Path(sys.argv[1])


def _then_hang(save: Any) -> Any:
    def save_then_hang(self: Any, *args: Any) -> None:
        save(self, *args)
        READY.touch()
        time.sleep(600)

    return save_then_hang


if __name__ == "__main__":
    PartialScores.save = _then_hang(PartialScores.save)  # type: ignore[method-assign]
    PartialAnswers.save = _then_hang(PartialAnswers.save)  # type: ignore[method-assign]
    sys.exit(main(sys.argv[2:]))
