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

from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from albef.config.io import to_dict
from albef.config.schema import ExperimentConfig
from albef.data.collate import RetrievalBatch, RetrievalCollator, TextPolicy
from albef.data.datasets import RetrievalTrainDataset
from albef.data.formats import read_retrieval_train
from albef.engine.distributed import current_world
from albef.engine.precision import Precision
from albef.engine.trainer import Objective
from albef.errors import ConfigError
from albef.evaluation.base import EvalResult
from albef.evaluation.feature_cache import FeatureCache, cache_key, data_fingerprint
from albef.evaluation.partial import DEFAULT_EVERY, PartialScores
from albef.evaluation.retrieval import RetrievalEvaluator, read_eval_split, settings_from_config
from albef.fileio import atomic_torch_save
from albef.losses.itm import NegativeSamples, Sampler, sample_negatives
from albef.models.albef import ALBEFRetrieval
from albef.reporting.environment import file_sha256
from albef.tasks.base import TASKS, Option, Task
from albef.tasks.contrastive import ITCResult, contrastive_step, draw_negatives
from albef.tasks.data import build_tokenizer, data_path, train_transform

FINETUNE_DESCRIPTION = """\
Finetune on image-text retrieval (official Retrieval.py): ITC with every caption of an image as a positive
over the batch and the queue (idx queue), momentum distillation, and ITM with hard negatives that exclude
same-image samples. Start from a pretraining checkpoint (converted) or a finetuned one. After each epoch
the val split is evaluated with the official protocol; best.pt keeps the best val r_mean, and the test split
is evaluated with it at the end. Reports (JSON + Markdown) go to <output-dir>/reports.
"""

EVALUATE_DESCRIPTION = """\
Evaluate a checkpoint on a retrieval split with the official protocol: ITC similarity, then the top k
candidates of every image and every text re-ranked by the ITM head (cells outside the top k = -100), batched
over many queries per fusion call. Writes the official metrics (txt_r1 ... r_mean) with intervals, mean/median
ranks and per-stage throughput (image/text encoding, ITC, re-rank pairs/s) and latency to
<output-dir>/retrieval-<dataset>-<split>.json (default output dir: <runtime.output_dir>/eval). Any checkpoint
can be evaluated on any dataset's split (zero-shot: e.g. the COCO-finetuned model with --config
retrieval_flickr).
"""

DATASETS = {"retrieval_coco": "coco", "retrieval_flickr": "flickr30k"}
"""Report dataset names of the real retrieval presets (another preset reports its name without ``retrieval_``)."""

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


class RetrievalTask(Task):
    """Retrieval finetuning on ``data.train_files`` (one record per caption), validation on ``data.val_file``."""

    help = "image-text retrieval (COCO, Flickr30K, synthetic)"
    finetune_description = FINETUNE_DESCRIPTION
    evaluate_description = EVALUATE_DESCRIPTION
    evaluate_options = (
        Option("--annotations", "evaluate this split file instead (ALBEF, MacCap or COCO layout)"),
        Option("--image-root", "root of the split's images (default: the config's data.image_root)"),
        Option("--k", "candidates re-ranked per query (default: eval.k_test)", type=int),
        Option("--itc-only", "rank by the ITC similarity only (no re-rank)", switch=True),
        Option(
            "--score",
            "re-rank score: the ITM match logit (official) or logit + ITC similarity (LAVIS)",
            choices=("itm", "itm+itc"),
            default="itm",
        ),
        Option(
            "--feature-dtype", "storage of image tokens", choices=("fp32", "bf16", "fp16"), default="fp32"
        ),
        Option(
            "--budget-mb",
            "memory budget of one fusion call in MiB (default: 1024 on a CPU, a quarter of the free memory "
            "on a GPU)",
            type=float,
        ),
        Option(
            "--residency",
            "where image tokens and text states stay while re-ranking: on the device when they fit (auto), "
            "on the device, or in host memory with each call's rows copied on a side stream",
            choices=("auto", "device", "host"),
            default="auto",
        ),
        Option("--cache-dir", "cache the encoded features here, keyed by checkpoint and data"),
        Option("--save-scores", "also save the two score matrices (<report>-scores.pt)", switch=True),
        Option(
            "--resume",
            "continue a killed evaluation from the re-rank results it saved (<output-dir>/.partial/); the "
            "score matrices equal an uninterrupted run's",
            switch=True,
        ),
        Option(
            "--save-every",
            "pairs re-ranked between two saves of the partial results (default: 200000)",
            type=int,
        ),
    )

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

    def dataset_name(self) -> str:
        if self.cfg.data.synthetic_size:
            return "synthetic"
        return DATASETS.get(str(self.cfg.name), str(self.cfg.name).removeprefix("retrieval_"))

    def report_stem(self, split: str) -> str:
        return f"retrieval-{self.dataset_name()}-{split}"

    def sample_records(self, result: EvalResult, split: str) -> list[dict[str, Any]]:
        """Every image and caption query with its best candidates and the rank of its ground truth."""
        from albef.evaluation.samples import retrieval_samples

        out = result.outputs
        return retrieval_samples(out["scores_i2t"], out["scores_t2i"], out["split"])

    def evaluation_dir(self) -> Path:
        return Path(self.cfg.runtime.output_dir) / "eval"

    def reports_dir(self, run_dir: Path) -> Path:
        return run_dir / "reports"

    def evaluator(
        self,
        split: str,
        precision: Precision,
        *,
        checkpoint: str | Path | None = None,
        annotations: str | None = None,
        image_root: str | None = None,
        cache_dir: str | None = None,
        save_scores: bool = False,
        **settings: Any,
    ) -> RetrievalEvaluator:
        """The official protocol (ITC top-k re-ranked by ITM) on ``data.val_file``, ``data.test_file`` or the
        ``annotations`` file; ``settings``: :class:`~albef.evaluation.retrieval.RetrievalSettings` fields
        (``None`` keeps the config's value); ``cache_dir`` with ``checkpoint``: reuse encoded features."""
        del save_scores  # a file option (:meth:`write_outputs`)
        work_dir = settings.pop("work_dir", None)
        name = annotations or {"val": self.cfg.data.val_file, "test": self.cfg.data.test_file}.get(split)
        if not name:
            raise ConfigError(
                f"the config names no file for the retrieval split {split!r} (data.{split}_file); "
                "give --annotations FILE"
            )
        root = Path(image_root) if image_root else data_path(self.cfg.data, self.cfg.data.image_root)
        return retrieval_evaluator(
            self.cfg, name, precision, image_root=root, checkpoint=checkpoint, cache_dir=cache_dir,
            work_dir=work_dir, **settings,
        )  # fmt: skip

    def output_files(self, split: str, out: Path, **options: Any) -> list[Path]:
        return [out / f"{self.report_stem(split)}-scores.pt"] if options.get("save_scores") else []

    def write_outputs(self, result: EvalResult, split: str, out: Path, **options: Any) -> None:
        """``<stem>-scores.pt`` (both score matrices) with ``--save-scores``."""
        if options.get("save_scores"):
            scores = {k: result.outputs[k] for k in ("scores_i2t", "scores_t2i")}
            path = atomic_torch_save(scores, out / f"{self.report_stem(split)}-scores.pt")
            result.extra["scores_file"] = str(path)


def retrieval_evaluator(
    cfg: ExperimentConfig,
    annotation: str,
    precision: Precision,
    *,
    image_root: Path | None = None,
    checkpoint: str | Path | None = None,
    cache_dir: str | None = None,
    work_dir: Path | None = None,
    resume: bool = False,
    save_every: int | None = None,
    **settings: Any,
) -> RetrievalEvaluator:
    """The :class:`RetrievalEvaluator` of a split file of ``cfg``'s data with ``cfg``'s protocol; features are
    cached in ``cache_dir`` (keyed by the ``checkpoint`` file, the model, the data and the encoding), and the
    re-rank saves its partial results under ``work_dir`` every ``save_every`` pairs (``resume``: continue)."""
    path = data_path(cfg.data, annotation)
    split = read_eval_split(path)
    root = image_root or data_path(cfg.data, cfg.data.image_root)
    try:
        chosen = settings_from_config(cfg, **{k: v for k, v in settings.items() if v is not None})
    except ValueError as err:
        raise ConfigError(str(err)) from err
    tokenizer = build_tokenizer(cfg.data)
    cache, key, partial = None, None, None
    if checkpoint is not None and (cache_dir or work_dir):
        encoding = {**chosen.encoding(), "tokenizer": cfg.data.tokenizer, "vocab": tokenizer.vocab_size}
        encoding["precision"] = cfg.runtime.precision
        model = to_dict(cfg.model)
        key = cache_key(file_sha256(checkpoint), model, data_fingerprint(split, root), encoding)
        cache = FeatureCache(cache_dir) if cache_dir else None
    if work_dir is not None and key is not None and not chosen.itc_only:
        every = save_every or DEFAULT_EVERY
        partial = PartialScores(work_dir / f"rank{current_world().rank}.pt", key, every, resume)
    elif resume:
        raise ConfigError("--resume needs a re-ranked evaluation of a --checkpoint file (not --itc-only)")
    return RetrievalEvaluator(
        split,
        root,
        tokenizer,
        precision,
        chosen,
        world=current_world(),
        cache=cache,
        cache_key=key if cache is not None else None,
        source=str(path),
        partial=partial,
    )


TASKS.add(
    "retrieval", RetrievalTask, "ITC (image-id positives, queue) + ITM finetuning, val r_mean selection"
)
