"""The JSON-lines metrics log of a training run: one object per optimizer step, resumable after a kill."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from albef.errors import ConfigError
from albef.reporting.measure import run_peak_memory


class MetricSink(Protocol):
    """Somewhere else a run's records go as they are written (TensorBoard, Weights & Biases)."""

    def write(self, record: Mapping[str, float | None]) -> None:
        """Take one record (``step`` and ``epoch`` plus its numbers; non-finite ones are ``None``)."""

    def close(self) -> None:
        """Flush and release."""


class TensorBoardSink:
    """Every number of every record as a TensorBoard scalar at its ``step`` (``runtime.tensorboard``).

    Args:
        log_dir: The event-file folder (``<run>/tensorboard``).
        purge_step: On resume, the first step the resumed run takes again: TensorBoard drops the earlier run's
            events from there on, as ``metrics.jsonl`` drops its records.
    """

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError(
                "runtime.tensorboard needs the tensorboard package: pip install tensorboard"
            ) from err
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, record: Mapping[str, float | None]) -> None:
        step = int(record["step"] or 0)
        for name, value in record.items():
            if name not in ("step", "epoch") and value is not None:
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Every record logged to a Weights & Biases run at its ``step`` (``runtime.wandb_project``).

    Args:
        project: The W&B project.
        run_dir: The run folder (W&B keeps its files under it; the run is named after it and resumed with it).
        config: The run's config, stored with the W&B run.
    """

    def __init__(self, project: str, run_dir: Path, config: Mapping[str, Any]) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ConfigError("runtime.wandb_project needs the wandb package: pip install wandb") from err
        run_id = "albef-" + "".join(c if c.isalnum() else "-" for c in run_dir.resolve().as_posix())[-56:]
        self.run = wandb.init(
            project=project,
            dir=str(run_dir),
            name=run_dir.name,
            id=run_id,
            resume="allow",
            config=dict(config),
        )

    def write(self, record: Mapping[str, float | None]) -> None:
        numbers = {k: v for k, v in record.items() if k != "step" and v is not None}
        self.run.log(numbers, step=int(record["step"] or 0))

    def close(self) -> None:
        self.run.finish()


def metric_sinks(cfg: Any, run_dir: Path, step: int) -> list[MetricSink]:
    """The sinks ``cfg.runtime`` asks for (TensorBoard, W&B) of a run in ``run_dir`` resuming after ``step``."""
    import dataclasses

    sinks: list[MetricSink] = []
    if cfg.runtime.tensorboard:
        sinks.append(TensorBoardSink(run_dir / "tensorboard", purge_step=step + 1))
    if cfg.runtime.wandb_project:
        sinks.append(WandbSink(cfg.runtime.wandb_project, run_dir, dataclasses.asdict(cfg)))
    return sinks


class MetricsLog:
    """Appends one JSON object per optimizer step to ``metrics.jsonl`` (rank 0 only), and hands each record to
    the ``sinks`` (TensorBoard, W&B), which it closes at the end.

    Args:
        path: The JSON-lines file.
        enabled: Write at all (rank 0).
        after_step: On opening, drop the records of later steps (and a torn last line): a run killed after
            its last checkpoint logged steps that the resumed run takes again. ``None`` keeps everything.
        sinks: Further destinations of every record.
    """

    def __init__(
        self,
        path: Path,
        enabled: bool = True,
        after_step: int | None = None,
        sinks: Sequence[MetricSink] = (),
    ) -> None:
        self.path = path
        self.enabled = enabled
        self.after_step = after_step
        self.sinks = list(sinks)
        self._handle: Any = None

    def __enter__(self) -> MetricsLog:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.after_step is not None and self.path.exists():
                self._truncate(self.after_step)
            self._handle = self.path.open("a", encoding="utf-8")
        return self

    def _truncate(self, step: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn by a kill mid-write
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line + "\n")
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        tmp.replace(self.path)

    def write(self, record: dict[str, float]) -> None:
        """Append a record (non-finite numbers become null)."""
        if self._handle is not None:
            clean = {k: (v if math.isfinite(v) else None) for k, v in record.items()}
            self._handle.write(json.dumps(clean) + "\n")
            self._handle.flush()
            for sink in self.sinks:
                sink.write(clean)

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
        for sink in self.sinks:
            sink.close()


def step_record(
    step: int, epoch: int, outputs: Mapping[str, Tensor], lr: float, alpha: float, items: int
) -> dict[str, float]:
    """The numbers of one optimizer step: every objective output (batch mean), their ``loss`` sum, lr, alpha."""
    record: dict[str, float] = {"step": step, "epoch": epoch}
    for name, value in outputs.items():
        record[name] = float(value.detach().float().mean())
    record["loss"] = sum(v for k, v in record.items() if k.endswith("_loss"))
    record.update(lr=lr, alpha=alpha)
    return record


def step_timing(items: int, data_time: float, step_time: float, device: torch.device) -> dict[str, float]:
    """How the host ran one step (every micro-batch of its accumulation group): samples/s (``items`` over every
    rank), the time spent waiting for data, its share of the step, the step time, run peak memory."""
    return {
        "samples_per_s": items / max(step_time, 1e-9),
        "data_time": data_time,
        "data_share": data_time / max(step_time, 1e-9),
        "step_time": step_time,
        "peak_memory_mb": run_peak_memory(device).mib,
    }


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The records of a run's ``metrics.jsonl`` (one per optimizer step)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
