"""Helper of the signal tests: ``albef pretrain ARGS`` whose steps slow down once SLOW_AT steps are done.

``python _pretrain_slow.py SLOW_AT READY pretrain ...``: from optimizer step SLOW_AT + 1 on, each step touches
READY and then takes 0.3 s more, so a test can send a signal while the run is between two step boundaries.
The exit status is the CLI's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from albef.cli.main import main
from albef.engine.trainer import Trainer

SLOW_AT, READY = int(sys.argv[1]), Path(sys.argv[2])
_step = Trainer._optimizer_step


def _slow_step(self: Trainer) -> None:
    if self.state.global_step >= SLOW_AT:
        READY.touch()
        time.sleep(0.3)
    _step(self)


if __name__ == "__main__":
    Trainer._optimizer_step = _slow_step  # type: ignore[method-assign]
    sys.exit(main(sys.argv[3:]))
