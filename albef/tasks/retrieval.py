"""Image-text retrieval finetuning: ITC with image-id positives over batch + queue, ITM with hard negatives.

The objective is the official ``model_retrieval.forward`` (spec §2.5) through the contrastive step shared with
pretraining (:func:`~albef.tasks.contrastive.contrastive_step`): all captions of an image, in the batch or in
the ``idx_queue``, are ITC positives with equal mass, distilled from the momentum teacher; the ITM negatives are
drawn from the batch with every sample of the same image excluded (a row with no valid negative gets none,
instead of the official crash, ALBEF#18). No MLM, and no temperature clamp. Training texts are padded to the
longest and never truncated, as the official loop does.

After each epoch the validation split is evaluated with the official protocol
(:class:`~albef.evaluation.retrieval.RetrievalEvaluator`) and ``best.pt`` keeps the epoch of the best ``r_mean``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset

from albef.config.schema import ExperimentConfig
from albef.data.collate import RetrievalBatch, RetrievalCollator, TextPolicy
from albef.data.datasets import RetrievalTrainDataset
from albef.data.formats import read_retrieval_train
from albef.engine.distributed import World, is_distributed
from albef.engine.precision import Precision, resolve_precision
from albef.engine.trainer import Objective
from albef.errors import ConfigError
from albef.evaluation.retrieval import RetrievalEvaluator, read_eval_split, settings_from_config
from albef.losses.itm import NegativeSamples, Sampler, sample_negatives
from albef.models.albef import ALBEFRetrieval
from albef.tasks.base import TASKS, Task
from albef.tasks.contrastive import ITCResult, contrastive_step, draw_negatives
from albef.tasks.data import build_tokenizer, data_path, train_transform

SELECT_METRIC = "r_mean"
"""The validation metric that picks ``best.pt`` (the official ``checkpoint_best.pth``)."""


class RetrievalObjective:
    """Computes the two retrieval losses for one batch.

    Args:
        itm_negatives: ``hard`` (official) or ``random`` ITM negatives (``model.itm_negatives``).
        sample: How the negatives are drawn (:func:`~albef.losses.itm.sample_negatives`; the reference checks
            inject the official order).

    Distillation follows the model (``model.distill``).
    """

    def __init__(self, itm_negatives: str = "hard", sample: Sampler = sample_negatives) -> None:
        self.itm_negatives = itm_negatives
        self.sample = sample

    def __call__(self, model: ALBEFRetrieval, batch: RetrievalBatch, alpha: float) -> dict[str, Tensor]:
        """Losses ``itc_loss`` and ``itm_loss``, and the logged ``temp``."""
        step = contrastive_step(
            model,
            batch.image,
            batch.text,
            alpha,
            self.draw_for(batch.idx),
            idx=batch.idx,
            distill=model.distill,
        )
        return {"itc_loss": step.itc.loss, "itm_loss": step.itm_loss, "temp": model.temp.detach()}

    def draw_for(self, idx: Tensor) -> Any:
        """The negative sampler of a batch: same-image entries (equal ``idx``) are never drawn."""

        def draw(itc: ITCResult) -> NegativeSamples:
            return draw_negatives(
                itc.sim_i2t, itc.sim_t2i, idx, strategy=self.itm_negatives, sample=self.sample
            )

        return draw


def current_world() -> World:
    """The running process group's rank and size (a single process when none is initialised)."""
    if not is_distributed():
        return World()
    import torch.distributed as dist

    return World(dist.get_rank(), dist.get_world_size())


class RetrievalTask(Task):
    """Retrieval finetuning on ``data.train_files`` (one record per caption), validation on ``data.val_file``."""

    def train_dataset(self) -> Dataset[Any]:
        transform = train_transform(self.cfg.data, self.cfg.model.vision.image_res)
        return self.train_files_dataset(read_retrieval_train, RetrievalTrainDataset, transform)

    def collator(self) -> RetrievalCollator:
        return RetrievalCollator(self.tokenizer, TextPolicy(max_length=self.cfg.data.max_tokens_train))

    def objective(self) -> Objective:
        return RetrievalObjective(  # type: ignore[return-value]  # narrower model/batch types
            itm_negatives=self.cfg.model.itm_negatives
        )

    selection = SELECT_METRIC

    def evaluator(self, split: str, precision: Precision) -> RetrievalEvaluator:
        """The official protocol (ITC top-k re-ranked by ITM) on ``data.val_file`` or ``data.test_file``."""
        name = {"val": self.cfg.data.val_file, "test": self.cfg.data.test_file}.get(split)
        if not name:
            raise ConfigError(f"the config names no file for the retrieval split {split!r}")
        return retrieval_evaluator(self.cfg, name, precision)


def evaluate_split(cfg: ExperimentConfig, model: nn.Module, annotation: str, **settings: Any) -> Any:
    """Evaluate ``model`` on a split file of ``cfg``'s data with ``cfg``'s protocol (k, lengths, batches).

    Args:
        cfg: The experiment config (``data``, ``eval.k_test``, ``runtime.precision``).
        model: The retrieval (or pretraining) model, on its device.
        annotation: The split file, relative to ``data.root`` or absolute.
        **settings: :class:`~albef.evaluation.retrieval.RetrievalSettings` fields to override.

    Returns:
        The :class:`~albef.evaluation.base.EvalResult`.
    """
    device = next(model.parameters()).device
    precision = resolve_precision(cfg.runtime.precision, device)
    return retrieval_evaluator(cfg, annotation, precision, **settings).run(model)


def retrieval_evaluator(
    cfg: ExperimentConfig, annotation: str, precision: Precision, **settings: Any
) -> RetrievalEvaluator:
    """The :class:`RetrievalEvaluator` of a split file of ``cfg``'s data with ``cfg``'s protocol."""
    path = data_path(cfg.data, annotation)
    return RetrievalEvaluator(
        read_eval_split(path),
        data_path(cfg.data, cfg.data.image_root),
        build_tokenizer(cfg.data),
        precision,
        settings_from_config(cfg, **settings),
        world=current_world(),
        source=str(path),
    )


TASKS.add(
    "retrieval", RetrievalTask, "ITC (image-id positives, queue) + ITM finetuning, val r_mean selection"
)
