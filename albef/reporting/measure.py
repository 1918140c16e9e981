"""Timing and peak memory of stages: the arithmetic as pure functions, the clocks as small classes.

Every timed call is measured on its own so that percentiles can be computed (STYLE §13):

- on CUDA a pair of ``torch.cuda.Event(enable_timing=True)`` brackets the call, with the device
  synchronised before it (earlier work is not charged to it) and the end event waited for after it;
- on CPU ``time.perf_counter`` brackets the call (CPU work is synchronous).

Warm-up calls run untimed and are only counted. Peak memory is the CUDA ``max_memory_allocated`` (reset when
a stage is entered, so it can be isolated per stage) or, on CPU, the process peak RSS from
``resource.getrusage`` (a process-wide high-water mark that cannot be reset or isolated).

Two clocks build on this:

- :class:`StageTimer` times named stages, either with a context manager in an existing loop (what the
  evaluators do) or by calling a function repeatedly (:meth:`StageTimer.measure`, what benchmarks do)::

      timers = StageTimer(device, warmup=1)
      for images in loader:
          with timers.stage("image_encode", items=len(images), item="image"):
              feats = model.encode_image(images)
      report.stages.update(timers.stats())

- :func:`timed` times a single block and leaves the seconds in the object it yields.
"""

from __future__ import annotations

import contextlib
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from albef.reporting.schema import LatencyStats, PeakMemory, StageStats

MIB = 2**20
SAMPLE_DECIMALS = 4
"""``samples_ms`` are stored rounded to 0.1 µs (statistics use the unrounded values)."""


# -- arithmetic (pure) ---------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between the closest ranks.

    The sorted values sit at positions ``0 .. n-1``; percentile ``q`` is read at position ``(n-1) * q/100``,
    interpolating linearly between its two neighbours (numpy's default ``"linear"`` method).

    Args:
        values: At least one sample.
        q: Percentile in ``[0, 100]``.

    Returns:
        The interpolated value.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats:
    """Mean, p50, p95, p99, min and max of latency samples in milliseconds."""
    if not samples_ms:
        raise ValueError("latency statistics of no samples")
    return LatencyStats(
        mean_ms=statistics.fmean(samples_ms),
        p50_ms=percentile(samples_ms, 50),
        p95_ms=percentile(samples_ms, 95),
        p99_ms=percentile(samples_ms, 99),
        min_ms=min(samples_ms),
        max_ms=max(samples_ms),
    )


def stage_stats(
    samples_s: Sequence[float],
    items_per_call: Sequence[int] | int,
    warmup: int,
    *,
    stage: str,
    item: str = "item",
    precision: str | None = None,
    peak_memory_mib: float | None = None,
) -> StageStats:
    """Throughput and latency of one stage from its per-call timings (warm-up calls already left out).

    Args:
        samples_s: Seconds of every timed call, in order.
        items_per_call: Items of each call (the last batch may be smaller), or one count for all calls.
        warmup: Calls that ran before timing started (recorded, not used).
        stage: Stage name.
        item: What one item is (``image``, ``text``, ``pair``, ...).
        precision: Precision the stage ran in.
        peak_memory_mib: Peak memory while the stage ran, where it can be isolated.

    Returns:
        ``items_per_s = sum(items) / sum(seconds)``; per-batch latency from the samples; per-item latency
        from each call's seconds divided by its item count.
    """
    counts = [items_per_call] * len(samples_s) if isinstance(items_per_call, int) else list(items_per_call)
    if not samples_s:
        raise ValueError(f"stage {stage!r}: no timed calls")
    if len(counts) != len(samples_s):
        raise ValueError(f"stage {stage!r}: {len(samples_s)} samples but {len(counts)} item counts")
    if min(counts) < 1:
        raise ValueError(f"stage {stage!r}: every timed call needs at least one item")
    batch_ms = [s * 1000.0 for s in samples_s]
    item_ms = [ms / n for ms, n in zip(batch_ms, counts, strict=True)]
    total_s = math.fsum(samples_s)
    return StageStats(
        stage=stage,
        items_per_s=sum(counts) / total_s if total_s > 0 else math.inf,
        batch_size=max(counts),
        num_batches=len(samples_s),
        items=sum(counts),
        warmup_batches=warmup,
        latency_batch=latency_stats(batch_ms),
        latency_item=latency_stats(item_ms),
        samples_ms=[round(ms, SAMPLE_DECIMALS) for ms in batch_ms],
        item=item,
        precision=precision,
        peak_memory_mib=peak_memory_mib,
    )


# -- device facts -------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA only; CPU work is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_FOLDED_PEAK_MIB: dict[int, float] = {}
"""Per CUDA device: the largest peak of the windows closed so far by :func:`reset_peak_memory`."""


def reset_peak_memory(device: torch.device) -> None:
    """Start a new CUDA peak-memory window, so a stage's peak is its own (the CPU's process peak RSS cannot be
    reset). The closed window's peak is kept for :func:`run_peak_memory`."""
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        window = torch.cuda.max_memory_allocated(device) / MIB
        _FOLDED_PEAK_MIB[index] = max(_FOLDED_PEAK_MIB.get(index, 0.0), window)
        torch.cuda.reset_peak_memory_stats(device)


def process_peak_rss_mib() -> float:
    """The process's peak resident set size in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def peak_memory(device: torch.device) -> PeakMemory:
    """CUDA ``max_memory_allocated`` since the last reset, or the process peak RSS on other devices."""
    if device.type == "cuda":
        return PeakMemory("cuda_max_allocated", torch.cuda.max_memory_allocated(device) / MIB)
    return PeakMemory("process_peak_rss", process_peak_rss_mib())


def run_peak_memory(device: torch.device) -> PeakMemory:
    """The process's peak so far, whatever stage windows :func:`reset_peak_memory` opened in between (what a
    training run reports: a validation's per-stage resets do not truncate it)."""
    current = peak_memory(device)
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return PeakMemory(current.kind, max(current.mib, _FOLDED_PEAK_MIB.get(index, 0.0)))
    return current


# -- clocks -------------------------------------------------------------------------------------------------
@dataclass
class Elapsed:
    """Filled by :func:`timed` when its block ends."""

    seconds: float = math.nan


@contextlib.contextmanager
def timed(device: torch.device) -> Iterator[Elapsed]:
    """Time the block on ``device`` (CUDA events or ``perf_counter``; see the module docstring).

    Yields:
        An :class:`Elapsed` whose ``seconds`` is set when the block exits without an exception.
    """
    elapsed = Elapsed()
    synchronize(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield elapsed
        end.record()
        end.synchronize()
        elapsed.seconds = start.elapsed_time(end) / 1000.0
    else:
        begin = time.perf_counter()
        yield elapsed
        elapsed.seconds = time.perf_counter() - begin


@dataclass
class _Record:
    """What :class:`StageTimer` keeps per stage."""

    item: str
    precision: str | None
    warmup: int = 0
    samples_s: list[float] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    peak_mib: float | None = None
    pending: list[tuple[Any, Any, int]] = field(default_factory=list)
    """CUDA (start, end) event pairs and items of :meth:`StageTimer.unsynced_stage` calls not read yet."""

    def resolve(self) -> None:
        """Read the pending events' times into ``samples_s`` (waits for the last one to complete)."""
        for start, end, items in self.pending:
            end.synchronize()
            self.samples_s.append(start.elapsed_time(end) / 1000.0)
            self.items.append(items)
        self.pending.clear()


class StageTimer:
    """Per-call timings of named stages, warm-up excluded.

    Args:
        device: Where the timed work runs (selects CUDA events or ``perf_counter``, and the memory kind).
        warmup: How many of the first entries of each stage run untimed (:meth:`stage`); the default of
            :meth:`measure`.
    """

    def __init__(self, device: torch.device, warmup: int = 0) -> None:
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.device = device
        self.warmup = warmup
        self._records: dict[str, _Record] = {}

    @contextlib.contextmanager
    def stage(
        self, name: str, items: int, *, item: str = "item", precision: str | None = None
    ) -> Iterator[None]:
        """Time the block as one call of stage ``name`` that processed ``items`` items.

        The first ``warmup`` entries of a stage only count as warm-up. On CUDA the peak-memory window is
        reset on entry, so each stage's peak is its own.
        """
        record = self._records.setdefault(name, _Record(item, precision))
        if record.warmup < self.warmup and not record.samples_s:
            yield
            record.warmup += 1
            return
        with self._timed_call(record, items):
            yield

    @contextlib.contextmanager
    def _timed_call(self, record: _Record, items: int) -> Iterator[None]:
        """Time the block into ``record`` (and its CUDA peak memory)."""
        reset_peak_memory(self.device)
        with timed(self.device) as elapsed:
            yield
        record.samples_s.append(elapsed.seconds)
        record.items.append(items)
        if self.device.type == "cuda":
            record.peak_mib = max(record.peak_mib or 0.0, peak_memory(self.device).mib)

    @contextlib.contextmanager
    def unsynced_stage(self, name: str, items: int, *, item: str = "item") -> Iterator[None]:
        """Time the block as one call of stage ``name`` without waiting for the device.

        On CUDA two events are recorded on the current stream and read only when the statistics are asked for,
        so a loop of such calls never blocks the host (the evaluators' loops); on other devices it is
        :meth:`stage`. Warm-up entries are skipped as by :meth:`stage`; no per-call peak memory is kept.
        """
        if self.device.type != "cuda":
            with self.stage(name, items, item=item):
                yield
            return
        record = self._records.setdefault(name, _Record(item, None))
        if record.warmup < self.warmup and not (record.samples_s or record.pending):
            yield
            record.warmup += 1
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        record.pending.append((start, end, items))

    def measure(
        self,
        name: str,
        fn: Callable[[], object],
        items: int,
        *,
        iters: int,
        warmup: int | None = None,
        item: str = "item",
        precision: str | None = None,
    ) -> StageStats:
        """Call ``fn`` ``warmup`` times untimed, then ``iters`` times each timed; the stage's statistics.

        Args:
            name: Stage key.
            fn: One call of the stage (its result is discarded).
            items: Items one call processes.
            iters: Timed calls (at least 1).
            warmup: Untimed calls first (default: the timer's ``warmup``).
            item: What one item is.
            precision: Precision the stage runs in.
        """
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        warmup = self.warmup if warmup is None else warmup
        record = self._records.setdefault(name, _Record(item, precision))
        for _ in range(warmup):
            fn()
        record.warmup += warmup
        for _ in range(iters):
            with self._timed_call(record, items):
                fn()
        return self.stage_stats(name)

    def stage_stats(self, name: str) -> StageStats:
        """The statistics of stage ``name`` so far."""
        if name not in self._records:
            raise KeyError(f"no stage {name!r}; timed: {', '.join(self._records) or 'none'}")
        rec = self._records[name]
        rec.resolve()
        return stage_stats(
            rec.samples_s,
            rec.items,
            rec.warmup,
            stage=name,
            item=rec.item,
            precision=rec.precision,
            peak_memory_mib=rec.peak_mib,
        )

    def stats(self) -> dict[str, StageStats]:
        """Every stage with at least one timed call, in first-entry order."""
        return {
            name: self.stage_stats(name)
            for name, rec in self._records.items()
            if rec.samples_s or rec.pending
        }

    def peak_memory(self) -> PeakMemory:
        """Peak memory of the run so far (:func:`run_peak_memory`)."""
        return run_peak_memory(self.device)
