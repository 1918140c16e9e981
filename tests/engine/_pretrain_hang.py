"""Helper of ``test_trainer``: ``albef pretrain ARGS`` that hangs before optimizer step HANG_AT + 1.

``python _pretrain_hang.py HANG_AT READY pretrain ...``: once ``HANG_AT`` steps are done (their metrics
written), the next optimizer step touches READY and sleeps, so the test can SIGKILL a run at a known point
in the middle of an epoch.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from albef.cli.main import main
from albef.engine.trainer import Trainer

HANG_AT, READY = int(sys.argv[1]), Path(sys.argv[2])
_step = Trainer._optimizer_step


def _hanging_step(self: Trainer) -> None:
    if self.state.global_step == HANG_AT:
        READY.touch()
        time.sleep(600)
    _step(self)


if __name__ == "__main__":
    Trainer._optimizer_step = _hanging_step  # type: ignore[method-assign]
    sys.exit(main(sys.argv[3:]))
