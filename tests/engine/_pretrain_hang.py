"""Helper of the run tests: ``albef pretrain ARGS`` that pauses before each optimizer step after HANG_AT.

``python _pretrain_hang.py HANG_AT READY pretrain ...``: once ``HANG_AT`` steps are done (their metrics
written), every later optimizer step touches READY and sleeps ``ALBEF_TEST_PAUSE`` seconds (600 by default: a
hang the test ends with SIGKILL; a fraction of a second: a slow run the test can signal between two step
boundaries). The exit status is the CLI's.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from albef.cli.main import main
from albef.engine.trainer import Trainer

HANG_AT, READY = int(sys.argv[1]), Path(sys.argv[2])
PAUSE = float(os.environ.get("ALBEF_TEST_PAUSE", "600"))
_step = Trainer._optimizer_step


def _paused_step(self: Trainer) -> None:
    if self.state.global_step >= HANG_AT:
        READY.touch()
        time.sleep(PAUSE)
    _step(self)


if __name__ == "__main__":
    Trainer._optimizer_step = _paused_step  # type: ignore[method-assign]
    sys.exit(main(sys.argv[3:]))
