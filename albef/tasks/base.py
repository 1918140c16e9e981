"""A task = its data, its objective, how a split is evaluated, which metric picks ``best.pt``, what it writes.

The model comes from ``albef.models.create_model``. Every task plugs into the one
:class:`~albef.engine.trainer.Trainer`: :meth:`Task.evaluator` gives the evaluator of a split, and the
per-epoch validation of every task is that evaluator on ``"val"`` (``data.val_file``), judged by
:attr:`Task.selection`. After an evaluation :meth:`Task.write_outputs` writes the task's own files (VQA's
server file, NLVR²'s predictions); :meth:`Task.report_stem` names the run report. The task's own command-line
options are plain data (:class:`Option`), which ``albef finetune <task>`` and ``albef evaluate <task>`` turn
into arguments and hand back to :meth:`Task.evaluator` and :meth:`Task.write_outputs` by name. Tasks register
by name in :data:`TASKS` (the names of ``ExperimentConfig.task``); the workflows and the CLI are written once
against this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn
from torch.utils.data import Dataset

from albef.config.schema import ExperimentConfig
from albef.data.datasets import EpochConcatDataset
from albef.data.tokenizer import TextTokenizer
from albef.engine.precision import Precision, resolve_precision
from albef.engine.trainer import EpochEvaluator, Objective
from albef.errors import ConfigError
from albef.evaluation.base import EvalResult, Evaluator
from albef.models.builders import create_model
from albef.registry import Registry
from albef.tasks.data import data_path


@dataclass(frozen=True)
class Option:
    """One of a task's own command-line options, as plain data (the CLI turns it into an argument).

    Attributes:
        flag: The long flag, e.g. ``--k``; its value reaches the task under :attr:`dest`.
        help: The help line.
        type: ``int``, ``float`` or ``str`` (unused for a switch).
        choices: The values allowed.
        default: The value when the option is not given.
        switch: An on/off flag.
        metavar: The placeholder shown in ``--help``.
        override: For a switch: the config override it stands for (e.g. ``model.alpha=0.0``).
    """

    flag: str
    help: str
    type: type | None = None
    choices: tuple[str, ...] | None = None
    default: Any = None
    switch: bool = False
    metavar: str | None = None
    override: str | None = None

    @property
    def dest(self) -> str:
        """The keyword the value is handed over as: the flag without dashes, ``-`` read as ``_``."""
        return self.flag.lstrip("-").replace("-", "_")


class Task(ABC):
    """Builds a task's training data and objective from a config, and says how it is evaluated and reported.

    Args:
        cfg: The experiment config.
        tokenizer: The text tokenizer (its vocabulary must match ``cfg.model.text.vocab_size``).
    """

    help: ClassVar[str] = ""
    """One line for ``albef finetune --help`` / ``albef evaluate --help``."""
    finetune_description: ClassVar[str | None] = None
    """``--help`` of ``albef finetune <task>``; ``None``: the task has no finetune command."""
    evaluate_description: ClassVar[str | None] = None
    """``--help`` of ``albef evaluate <task>``; ``None``: the task has no evaluate command."""
    default_config: ClassVar[str | None] = None
    """The preset ``albef evaluate <task>`` uses without ``--config`` (``None``: ``synthetic_<task>``)."""
    splits: ClassVar[tuple[str, ...]] = ("test", "val")
    """The ``--split`` names of ``albef evaluate <task>``; the first is the default."""
    finetune_options: ClassVar[tuple[Option, ...]] = ()
    """Options of ``albef finetune <task>`` besides the shared training ones (also handed to the test split's
    :meth:`evaluator` and :meth:`write_outputs`)."""
    evaluate_options: ClassVar[tuple[Option, ...]] = ()
    """Options of ``albef evaluate <task>`` besides config, checkpoint, split and output directory."""
    unused_parameters: ClassVar[bool] = False
    """Some trainable parameters take no part in a training step's loss, so DDP must look for them
    (``find_unused_parameters``, an extra pass over the graph every step); only where that is so."""
    report_dataset: ClassVar[str] = ""
    """The dataset the reports name for the task's real data (a synthetic-world config reports ``synthetic``)."""
    text_negatives: ClassVar[bool] = False
    """Whether the task trains with ``data.itm_text_negatives`` (a config naming them for another task is an
    error, not a key that silently does nothing)."""

    def __init__(self, cfg: ExperimentConfig, tokenizer: TextTokenizer) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        if cfg.data.itm_text_negatives and not self.text_negatives:
            raise ConfigError(
                f"data.itm_text_negatives is a pretraining option; task '{cfg.task}' does not use it"
            )
        if tokenizer.vocab_size != cfg.model.text.vocab_size:
            raise ValueError(
                f"tokenizer '{cfg.data.tokenizer}' has {tokenizer.vocab_size} tokens but "
                f"model.text.vocab_size is {cfg.model.text.vocab_size}"
            )

    def build_model(self) -> nn.Module:
        """The task model from ``cfg.model``."""
        return create_model(self.cfg.task, self.cfg.model)

    @abstractmethod
    def train_dataset(self) -> Dataset[Any]:
        """The training dataset over every ``data.train_files`` entry."""

    @abstractmethod
    def collator(self) -> Callable[[list[Any]], Any]:
        """The training collate function (tokenisation policy of the call site)."""

    @abstractmethod
    def objective(self) -> Objective:  # each task narrows the model/batch types of its objective
        """``(model, batch, alpha) -> {"*_loss": ..., logged scalars}``."""

    selection: ClassVar[str | None] = None
    """The metric of :meth:`evaluator` (higher is better) whose best validation epoch is kept as ``best.pt``;
    ``None``: the task validates nothing."""

    def evaluator(self, split: str, precision: Precision, **options: Any) -> Evaluator:
        """The evaluator of ``split`` (``val`` or ``test``; ``dev`` where the dataset names it so).

        ``options``: the task's :attr:`evaluate_options` (or :attr:`finetune_options`) by :attr:`Option.dest`,
        and ``checkpoint``, the file the evaluated weights came from.
        """
        raise ConfigError(f"task {self.cfg.task!r} has no evaluator")

    def dataset_name(self) -> str:
        """``synthetic`` for a synthetic-world config, else :attr:`report_dataset`."""
        return "synthetic" if self.cfg.data.synthetic_size else self.report_dataset or self.cfg.task

    def report_stem(self, split: str) -> str:
        """The run report of ``split`` is ``<stem>.json`` with its ``<stem>.md``."""
        return f"{self.cfg.task}_{split}_report"

    def evaluation_dir(self) -> Path:
        """Where ``albef evaluate`` writes when no ``--output-dir`` is given."""
        return Path(self.cfg.runtime.output_dir)

    def reports_dir(self, run_dir: Path) -> Path:
        """Where a finetuning run in ``run_dir`` writes the report of its test split."""
        return run_dir

    def output_files(self, split: str, out: Path, **options: Any) -> list[Path]:
        """The task's own files an evaluation of ``split`` writes into ``out`` (an earlier one is not replaced
        without ``--overwrite``)."""
        del split, out, options
        return []

    def write_outputs(self, result: EvalResult, split: str, out: Path, **options: Any) -> None:
        """Write the task's own files of an evaluation (rank 0), noting them in ``result.extra``."""
        del result, split, out, options

    def sample_records(self, result: EvalResult, split: str) -> list[dict[str, Any]]:
        """One JSON record per evaluated item, for ``--log-samples`` (:mod:`albef.evaluation.samples`)."""
        del result, split
        raise ConfigError(f"task {self.cfg.task!r} keeps no per-sample records (--log-samples)")

    def initial_weights(self, checkpoint: str | None, out: Path, **options: Any) -> str | None:
        """The weights the finetuning run actually starts from (default: ``checkpoint`` itself)."""
        del out, options
        return checkpoint

    def epoch_evaluator(self) -> EpochEvaluator | None:
        """Validation after each training epoch: :meth:`evaluator` of ``val`` (none without ``data.val_file``)."""
        if self.selection is None or not self.cfg.data.val_file:
            return None

        def validate(model: nn.Module, epoch: int) -> dict[str, float]:
            del epoch
            device = next(model.parameters()).device  # the trainer has placed the model by now
            evaluator = self.evaluator("val", resolve_precision(self.cfg.runtime.precision, device))
            return evaluator.run(model).values()

        return validate

    def select_metric(self) -> str | None:
        """The validation metric that picks ``best.pt``; ``None`` keeps no best."""
        return self.selection if self.cfg.data.val_file else None

    def train_files_dataset(
        self,
        read: Callable[[Path], Any],
        dataset_cls: Callable[..., Dataset[Any]],
        transform: Callable[..., Any],
        roots: Any = None,
    ) -> Dataset[Any]:
        """One ``dataset_cls`` per ``data.train_files`` entry (records from ``read``), concatenated.

        Args:
            read: Reads a file's records.
            dataset_cls: A record dataset (``records, roots, transform, max_words=, source=, seed=,
                bad_images=``).
            transform: The training image transform.
            roots: Image root(s); ``data.image_root`` by default.
        """
        data = self.cfg.data
        roots = data_path(data, data.image_root) if roots is None else roots
        return EpochConcatDataset(
            [
                dataset_cls(
                    read(data_path(data, name)),
                    roots,
                    transform,
                    max_words=data.max_words,
                    source=str(data_path(data, name)),
                    seed=self.cfg.runtime.seed,
                    bad_images=data.bad_images,
                )
                for name in data.train_files
            ]
        )

    def check_model(self, model: nn.Module, global_batch: int) -> None:
        """Start-up checks that would otherwise crash mid-run (e.g. queue size vs global batch)."""
        queue = getattr(model, "queue", None)
        if queue is not None:
            queue.check_batch(global_batch)


TASKS: Registry[Callable[[ExperimentConfig, TextTokenizer], Task]] = Registry("training task")
