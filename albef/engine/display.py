"""What a person watching a training run sees: a progress bar, or a status line every ``runtime.log_every`` steps.

With a progress bar (rank 0, a terminal, no ``--no-progress``) each epoch gets a tqdm bar whose postfix shows
the loss parts. Without one (``--no-progress``, a scheduler's log file) rank 0 prints one line every
``log_every`` optimizer steps instead, so that a log shows how the run is going. ``metrics.jsonl`` records every
step either way.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


class StepDisplay:
    """Progress of a training run on stderr.

    Args:
        bar: Draw a tqdm bar per epoch.
        log_every: Without a bar, print a status line every this many steps (0: never).
        total_steps: The run's last optimizer step.
    """

    def __init__(self, bar: bool, log_every: int, total_steps: int) -> None:
        self.bar = bar
        self.log_every = log_every
        self.total_steps = total_steps
        self._tqdm: Any = None

    def start_epoch(self, epoch: int, steps: int, done: int) -> None:
        """A new epoch of ``steps`` steps (``done`` of them already taken, after a resume)."""
        if not self.bar:
            return
        from tqdm import tqdm

        self._tqdm = tqdm(
            total=steps + done,
            initial=done,
            desc=f"epoch {epoch}",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )

    def step(self, record: Mapping[str, float]) -> None:
        """One optimizer step's record (as written to ``metrics.jsonl``)."""
        losses = {k: v for k, v in record.items() if k.endswith("_loss")}
        if self._tqdm is not None:
            self._tqdm.update(1)
            self._tqdm.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            return
        step = int(record["step"])
        if self.bar or self.log_every <= 0 or (step % self.log_every and step != self.total_steps):
            return
        parts = " ".join(f"{k.removesuffix('_loss')} {v:.4f}" for k, v in losses.items())
        print(
            f"step {step}/{self.total_steps} (epoch {int(record['epoch'])}): loss {record['loss']:.4f} ({parts}), "
            f"lr {record['lr']:.3g}, {record['samples_per_s']:.1f} samples/s",
            file=sys.stderr,
            flush=True,
        )

    def end_epoch(self) -> None:
        """Close the epoch's bar."""
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
