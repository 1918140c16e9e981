"""The run report: the one JSON artefact every evaluation, training summary and benchmark writes.

A :class:`RunReport` holds what was measured (metrics, per-stage throughput and latency, peak memory) and
everything needed to interpret it (task, data, checkpoint, environment, full config). Rendering, the paper
comparison and the regression gate are separate functions that read this record (STYLE §12).

The JSON layout is versioned by :data:`SCHEMA_VERSION`; :func:`RunReport.from_dict` rejects other versions
with a :class:`ReportError` instead of misreading them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from albef.fileio import atomic_write_text

SCHEMA_VERSION = 2
"""Bump when a field changes meaning or is removed; readers refuse other versions.

Version 2 added each metric's sample size and bootstrap interval (``n``, ``ci_low``, ``ci_high``) and
``environment.deterministic``; version 1 reports are still read (without intervals)."""
READABLE_VERSIONS = (1, 2)

REPORT_KINDS = ("evaluation", "benchmark", "training")


class ReportError(ValueError):
    """A run report that cannot be used (unreadable file, unknown schema version, malformed field)."""


@dataclass
class Metric:
    """One measured quality figure.

    Attributes:
        value: The figure (percentages are in percent, 0-100, as the paper prints them).
        higher_is_better: Direction for the regression gate and for "best" selection.
        unit: ``"%"`` for percentages, ``""`` for plain numbers (ranks, losses, counts).
        group: Optional breakdown the value belongs to (``"answer_type"``, ``"class"``, ...); ungrouped
            metrics are the headline figures.
        n: Evaluation units the value was measured on (images, questions, pairs, ...), where counted.
        ci_low: Lower bound of its 95 % bootstrap interval (``albef.evaluation.bootstrap``), where computed.
        ci_high: Upper bound of that interval.
    """

    value: float
    higher_is_better: bool = True
    unit: str = "%"
    group: str | None = None
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width, or ``None`` without an interval."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2

    def contains(self, value: float) -> bool | None:
        """Whether ``value`` lies inside the interval (``None`` without one)."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_low <= value <= self.ci_high

    def formatted(self, digits: int = 1) -> str:
        """``58.8 ± 2.7`` with an interval, else ``58.8``."""
        half = self.half_width
        text = f"{self.value:.{digits}f}"
        return text if half is None else f"{text} ± {half:.{digits}f}"


@dataclass
class LatencyStats:
    """Statistics of latency samples in milliseconds."""

    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float


@dataclass
class StageStats:
    """Throughput and latency of one timed stage (warm-up batches excluded).

    Attributes:
        stage: What was timed (``image_encode``, ``text_encode``, ``itc_similarity``, ``itm_rerank``, ...).
        items_per_s: ``items / sum(per-batch seconds)``.
        batch_size: Items per timed call (the largest one when the last batch is smaller).
        num_batches: Timed calls.
        items: Items over the timed calls.
        warmup_batches: Calls run before timing started (not in the samples).
        latency_batch: Per-call latency.
        latency_item: Per-item latency (each call's latency divided by its item count).
        samples_ms: Every timed call's latency, in order.
        item: What one item is (``image``, ``text``, ``pair``, ``question``, ...).
        precision: Precision the stage ran in, when it differs across a report's stages.
        flops_per_item: Counted FLOPs of one item (``torch.utils.flop_counter``), when measured.
        achieved_tflops: ``flops_per_item * items_per_s / 1e12``.
        mfu: Achieved / peak FLOP/s of the device at this precision, where the peak is known.
        peak_memory_mib: Peak memory while this stage ran, where it can be isolated (CUDA).
    """

    stage: str
    items_per_s: float
    batch_size: int
    num_batches: int
    items: int
    warmup_batches: int
    latency_batch: LatencyStats
    latency_item: LatencyStats
    samples_ms: list[float] = field(default_factory=list)
    item: str = "item"
    precision: str | None = None
    flops_per_item: float | None = None
    achieved_tflops: float | None = None
    mfu: float | None = None
    peak_memory_mib: float | None = None


@dataclass
class PeakMemory:
    """Peak memory of the run: ``cuda_max_allocated`` on CUDA, ``process_peak_rss`` on CPU."""

    kind: str
    mib: float


@dataclass
class CheckpointInfo:
    """The weights a run used; ``sha256`` identifies the content whatever the path."""

    path: str | None = None
    sha256: str | None = None


@dataclass
class Environment:
    """Where and how the run happened."""

    device: str = "cpu"
    device_name: str = ""
    precision: str = "fp32"
    torch: str = ""
    timm: str = ""
    transformers: str = ""
    python: str = ""
    cuda: str | None = None
    cudnn: str | None = None
    cpu_threads: int | None = None
    cpu_count: int | None = None
    platform: str = ""
    git: str | None = None
    seed: int | None = None
    deterministic: bool | None = None
    """Whether deterministic algorithms were on (``runtime.deterministic``); ``None`` in older reports."""
    start_time: str = ""
    wall_time_s: float | None = None


@dataclass
class RunReport:
    """The record of one run (see the module docstring).

    Attributes:
        kind: ``evaluation``, ``benchmark`` or ``training``.
        task: ``retrieval``, ``vqa``, ``nlvr``, ``ve``, ``pretrain``, ``model`` (bench), ...
        dataset: ``coco``, ``flickr30k``, ``vqa_v2``, ``nlvr2``, ``snli_ve``, ``synthetic``, ...
        split: ``test``, ``val``, ``dev``, ``test-dev``, ... (``None`` for benchmarks without data).
        model_preset: Model preset or config name.
        checkpoint: The weights (``None`` for random weights).
        metrics: Name -> :class:`Metric` (official key names, e.g. ``txt_r1``, ``overall``).
        stages: Stage key -> :class:`StageStats`; keys are unique (e.g. ``image_encode`` or
            ``image_encode/bf16/bs32`` when a benchmark sweeps precisions and batch sizes).
        memory: Peak memory of the whole run.
        environment: Device, versions, precision, seed, times.
        config: The full experiment config (or the benchmark's arguments) as a dict.
        extra: Anything task-specific that renderers may use (``recall_at_k`` curves, per-category counts,
            output file paths, notes).
        schema_version: Always :data:`SCHEMA_VERSION` when written by this version.
    """

    kind: str
    task: str
    dataset: str
    split: str | None = None
    model_preset: str | None = None
    checkpoint: CheckpointInfo | None = None
    metrics: dict[str, Metric] = field(default_factory=dict)
    stages: dict[str, StageStats] = field(default_factory=dict)
    memory: PeakMemory | None = None
    environment: Environment = field(default_factory=Environment)
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in REPORT_KINDS:
            raise ReportError(f"unknown report kind {self.kind!r}; valid: {', '.join(REPORT_KINDS)}")

    def add_metric(
        self,
        name: str,
        value: float,
        higher_is_better: bool = True,
        unit: str = "%",
        group: str | None = None,
        n: int | None = None,
        interval: tuple[float, float] | None = None,
    ) -> None:
        """Record metric ``name`` (a plain float, so tensors and numpy scalars do not leak into the JSON),
        with its sample size and ``(low, high)`` interval where known."""
        low, high = (None, None) if interval is None else (float(interval[0]), float(interval[1]))
        self.metrics[name] = Metric(float(value), higher_is_better, unit, group, n, low, high)

    def headline_metrics(self) -> dict[str, Metric]:
        """The metrics without a group (the ones tables and the paper comparison show)."""
        return {name: m for name, m in self.metrics.items() if m.group is None}

    # -- serialisation ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``schema_version`` first)."""
        data = asdict(self)
        return {"schema_version": data.pop("schema_version"), **data}

    def to_json(self) -> str:
        """Indented JSON text with a trailing newline."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> RunReport:
        """Parse a dict written by :meth:`to_dict`; raises :class:`ReportError` naming ``source``."""
        if not isinstance(data, dict):
            raise ReportError(f"{source}: a run report is a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise ReportError(
                f"{source}: run report schema_version {version!r} is not supported "
                f"(this albef reads versions {', '.join(map(str, READABLE_VERSIONS))})"
            )
        try:
            body = {k: v for k, v in data.items() if k != "schema_version"}
            _reject_unknown(cls, body, source)
            body["metrics"] = {
                k: _build(Metric, v, f"{source}: metrics.{k}") for k, v in body["metrics"].items()
            }
            body["stages"] = {k: _stage(v, f"{source}: stages.{k}") for k, v in body["stages"].items()}
            if body.get("memory") is not None:
                body["memory"] = _build(PeakMemory, body["memory"], f"{source}: memory")
            if body.get("checkpoint") is not None:
                body["checkpoint"] = _build(CheckpointInfo, body["checkpoint"], f"{source}: checkpoint")
            body["environment"] = _build(Environment, body.get("environment", {}), f"{source}: environment")
            return cls(**body)
        except KeyError as err:
            raise ReportError(f"{source}: missing field {err}") from err
        except (TypeError, AttributeError) as err:
            raise ReportError(f"{source}: malformed run report ({err})") from err

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically (temporary sibling, then rename); returns the path."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunReport:
        """Read a report written by :meth:`save`; unreadable or unsupported files raise :class:`ReportError`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise ReportError(f"{path}: cannot read run report ({err.strerror or err})") from err
        except json.JSONDecodeError as err:
            raise ReportError(f"{path}: not JSON (line {err.lineno}: {err.msg})") from err
        return cls.from_dict(data, source=str(path))


def _reject_unknown(cls: type, data: dict[str, Any], source: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ReportError(f"{source}: unknown field(s) {', '.join(unknown)}")


def _build(cls: type, data: Any, source: str) -> Any:
    if not isinstance(data, dict):
        raise ReportError(f"{source}: expected an object, got {type(data).__name__}")
    _reject_unknown(cls, data, source)
    return cls(**data)


def _stage(data: Any, source: str) -> StageStats:
    if not isinstance(data, dict):
        raise ReportError(f"{source}: expected an object, got {type(data).__name__}")
    body = dict(data)
    for name in ("latency_batch", "latency_item"):
        body[name] = _build(LatencyStats, body[name], f"{source}.{name}")
    result: StageStats = _build(StageStats, body, source)
    return result
