"""Stopping a training run on SIGINT / SIGTERM at the next step boundary, on every rank at once.

A scheduler sends SIGTERM before it preempts a job, a terminal sends SIGINT on Ctrl-C. Either only asks the
loop to stop: the trainer finishes the optimizer step in progress, writes a checkpoint and raises
:class:`~albef.errors.RunInterrupted` (exit status 128 + the signal). A second SIGINT interrupts at once.
Under ``torchrun`` the ranks may see the signal a step apart, so they agree through an all-reduce.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import torch

from albef.engine.distributed import World

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Records the first stop signal while :meth:`listening`.

    Args:
        announce: Print a line when a signal arrives (rank 0).
    """

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.signum: int | None = None

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """Install the handlers for the block (in the main thread only; elsewhere signals stay as they are)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._ask_to_stop) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _ask_to_stop(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            print(
                f"albef: {signal.Signals(signum).name} received: stopping after this step with a checkpoint "
                "(Ctrl-C again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

    def requested(self, world: World, device: torch.device) -> int | None:
        """The signal that asked to stop on any rank, or ``None`` (every rank must call it at the same step)."""
        if not world.distributed:
            return self.signum
        flag = torch.tensor([float(self.signum or 0)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)  # the largest number wins
        return int(flag.item()) or None
