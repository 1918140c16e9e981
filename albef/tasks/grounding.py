"""Weakly-supervised visual grounding (RefCOCO+, the official ``Grounding.py``): no box is ever trained on.

Finetuning is the retrieval objective (:class:`~albef.tasks.retrieval.RetrievalObjective`: ITC with every
expression of an image file as a positive, ITM with hard negatives, distillation) on (image, referring
expression) pairs, with the official grounding transform (square resize, flip, RandomAugment; no crop).
Evaluation computes each expression's Grad-CAM map (``itm``: fusion layer 8's cross-attention, the official
default; ``itc``: a ViT block) and picks the proposal with the most map mass per sqrt(area) (the official
``grounding_eval``); ``val_d`` / ``testA_d`` / ``testB_d`` are the shares of expressions whose box has IoU >= 0.5
with the ground truth. ``best.pt`` keeps the epoch of the best ``val_d``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from albef.data.collate import GroundingCollator, RetrievalCollator, TextPolicy
from albef.data.datasets import GroundingDataset, RetrievalTrainDataset
from albef.data.formats_grounding import read_dets, read_grounding_eval, read_grounding_train, read_refer
from albef.data.loaders import build_loader
from albef.data.transforms import build_grounding_train_transform, build_test_transform
from albef.engine.distributed import current_world
from albef.engine.precision import Precision
from albef.engine.trainer import Objective
from albef.errors import ConfigError
from albef.evaluation.base import EvalResult
from albef.evaluation.candidates import shard_rows
from albef.evaluation.gradcam import GRADCAM_MODES
from albef.evaluation.grounding import STALE_RULES, as_records
from albef.evaluation.grounding_evaluator import GroundingEvaluator
from albef.fileio import atomic_write_json
from albef.tasks.base import TASKS, Option, Task
from albef.tasks.data import data_path
from albef.tasks.retrieval import RetrievalObjective

FINETUNE_DESCRIPTION = """\
Finetune for weakly-supervised grounding (official Grounding.py): the retrieval objective (ITC with every
expression of an image as a positive, ITM with hard negatives, distillation) on image-expression pairs; no
box is used in training. After each epoch the val split is evaluated (Grad-CAM, proposal scoring, IoU >= 0.5);
best.pt keeps the best val_d and the test split (testA, testB) is evaluated with it at the end.
"""

EVALUATE_DESCRIPTION = """\
Evaluate a checkpoint on RefCOCO+-style grounding as the official code does: for each referring expression
the Grad-CAM map of the ITM match logit through fusion layer 8's cross-attention (--gradcam-mode itc: the
ITC similarity through a ViT block), upsampled bicubically to the image, scores every proposal of the image
(map mass / sqrt(area), corners truncated); the best one is correct when its IoU with the ground truth is
>= 0.5. Writes val_d / testA_d / testB_d (percent, with intervals), Grad-CAM throughput, the per-expression
results (<report>-results.json) and a figure of heat maps with the chosen and true boxes.
"""


class GroundingTask(Task):
    """RefCOCO+ grounding: retrieval-objective finetuning, Grad-CAM box accuracy (module docstring)."""

    help = "weakly-supervised grounding (RefCOCO+): Grad-CAM boxes, accuracy at IoU >= 0.5"
    finetune_description = FINETUNE_DESCRIPTION
    evaluate_description = EVALUATE_DESCRIPTION
    splits = ("test", "val")
    report_dataset = "refcoco+"
    selection = "val_d"
    evaluate_options = (
        Option(
            "--gradcam-mode",
            "Grad-CAM of the ITM head (official) or the ITC similarity",
            choices=GRADCAM_MODES,
        ),
        Option("--block-num", "its layer (default eval.gradcam_block: 8, the third fusion layer)", type=int),
        Option(
            "--stale-box",
            "a result with no positive proposal: official reuses the previous result's box, miss counts it wrong",
            choices=STALE_RULES,
            default="official",
        ),
    )

    def train_dataset(self) -> Dataset[Any]:
        transform = build_grounding_train_transform(self.cfg.model.vision.image_res)
        return self.train_files_dataset(read_grounding_train, RetrievalTrainDataset, transform)

    def collator(self) -> RetrievalCollator:
        return RetrievalCollator(self.tokenizer, TextPolicy(max_length=self.cfg.data.max_tokens_train))

    def objective(self) -> Objective:
        return RetrievalObjective(itm_negatives=self.cfg.model.itm_negatives)  # type: ignore[return-value]

    def report_stem(self, split: str) -> str:
        return f"grounding-{self.dataset_name()}-{split}"

    def _file(self, key: str, what: str) -> Path:
        name = getattr(self.cfg.data, key)
        if not name:
            raise ConfigError(f"grounding needs data.{key} ({what})")
        return data_path(self.cfg.data, name)

    def evaluator(
        self,
        split: str,
        precision: Precision,
        *,
        gradcam_mode: str | None = None,
        block_num: int | None = None,
        stale_box: str = "official",
        **unused: Any,
    ) -> GroundingEvaluator:
        """The split's expressions (``data.val_file`` / ``data.test_file``) scored against ``data.det_file``
        with the refs of ``data.refs_file`` and ``data.instances_file``."""
        del unused  # checkpoint, work_dir: nothing to cache or resume here
        data = self.cfg.data
        path = self._split_file(split)
        refs, sizes = read_refer(
            self._file("refs_file", "the REFER refs"), self._file("instances_file", "instances.json")
        )
        dets = read_dets(self._file("det_file", "the proposals, dets.json"))
        dataset = GroundingDataset(
            read_grounding_eval(path), data_path(data, data.image_root), build_test_transform(self.cfg.model.vision.image_res),
            max_words=data.max_words, source=str(path), seed=self.cfg.runtime.seed, bad_images=data.bad_images,
        )  # fmt: skip
        missing = sorted({r.ref_id for r in dataset.records} - set(refs))
        if missing:
            raise ConfigError(
                f"{path}: ref_id {missing[0]} (and {len(missing) - 1} more) not in {data.refs_file}"
            )
        world = current_world()
        rows = shard_rows(len(dataset), world)
        start = int(rows[0]) if rows.numel() else len(dataset)
        part = Subset(dataset, rows.tolist()) if world.distributed else dataset
        collate = GroundingCollator(
            self.tokenizer, TextPolicy(max_length=None)
        )  # padding longest, as officially
        loader = build_loader(part, data.batch_size_test, collate, train=False, num_workers=data.num_workers)
        mode = gradcam_mode or self.cfg.eval.gradcam_mode
        block = self.cfg.eval.gradcam_block if block_num is None else block_num
        return GroundingEvaluator(
            loader,
            refs,
            sizes,
            dets,
            precision,
            mode=mode,
            block=block,
            stale=stale_box,
            world=world,
            start=start,
        )

    def output_files(self, split: str, out: Path, **options: Any) -> list[Path]:
        return [
            out / f"{self.report_stem(split)}-results.json",
            out / f"{self.report_stem(split)}-heatmaps.png",
        ]

    def sample_records(self, result: EvalResult, split: str) -> list[dict[str, Any]]:
        """Every expression's chosen box, IoU and hit (the records of ``<stem>-results.json``)."""
        return as_records(result.outputs["results"])

    def write_outputs(self, result: EvalResult, split: str, out: Path, **options: Any) -> None:
        """``<stem>-results.json`` (every expression's box, IoU and hit) and ``<stem>-heatmaps.png``."""
        from albef.evaluation.grounding_figure import heatmap_figure

        stem = self.report_stem(split)
        path = atomic_write_json(out / f"{stem}-results.json", as_records(result.outputs["results"]))
        result.extra["results_file"] = str(path)
        records = read_grounding_eval(self._split_file(split))
        root = data_path(self.cfg.data, self.cfg.data.image_root)
        figure = heatmap_figure(result, records, root, out / f"{stem}-heatmaps.png")
        if figure is not None:
            result.extra["heatmap_figure"] = str(figure)

    def _split_file(self, split: str) -> Path:
        """The annotation file of ``split`` (``data.val_file`` / ``data.test_file``)."""
        name = {"val": self.cfg.data.val_file, "test": self.cfg.data.test_file}.get(split)
        if not name:
            raise ConfigError(
                f"the config names no file for the grounding split {split!r} (data.{split}_file)"
            )
        return data_path(self.cfg.data, name)


TASKS.add("grounding", GroundingTask, "RefCOCO+ weakly-supervised grounding: Grad-CAM of ITM, box accuracy")
