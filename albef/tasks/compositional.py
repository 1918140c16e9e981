"""Compositionality benchmarks, evaluation only: Winoground, SugarCrepe and ARO, each scored with ITC, ITM and
ITM + ITC side by side (:mod:`albef.evaluation.compositional_evaluator`).

They run the retrieval model: a pretraining checkpoint (``ALBEF.pth``) is converted as for retrieval, a
retrieval checkpoint (``mscoco.pth``) loads as it is. Nothing is trained, so these tasks have ``albef evaluate``
commands only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset

from albef.data.formats_compositional import (
    SUGARCREPE_SUBSETS,
    read_aro_vg,
    read_caption_images,
    read_relation_list,
    read_sugarcrepe,
    read_winoground,
    sugarcrepe_file,
)
from albef.data.transforms import build_test_transform
from albef.data.word_order import order_examples, spacy_tagger
from albef.engine.precision import Precision
from albef.engine.trainer import Objective
from albef.errors import ConfigError
from albef.evaluation.base import EvalResult
from albef.evaluation.compositional import ARO_MIN_ATTRIBUTE_EXAMPLES
from albef.evaluation.compositional_evaluator import (
    Benchmark,
    CompositionalEvaluator,
    ContrastBenchmark,
    WinogroundBenchmark,
)
from albef.tasks.base import TASKS, Task
from albef.tasks.data import data_path

EXTRA_SUBSETS = ("replace_count",)
"""Subsets beyond the release: the synthetic probes also change a count ("two stars" -> "three stars")."""


SCORING = """\
Every distinct image and caption is encoded once and every distinct pair scored once with three scorers,
reported side by side with 95 % bootstrap intervals: ITC (the cosine of the contrastive features), ITM (the
fusion encoder's match logit) and ITM + ITC (their sum, as the retrieval re-rank's --score itm+itc). With
--log-samples, <report>-samples.jsonl holds every example's scores. Takes a pretraining or retrieval
checkpoint."""


class BenchmarkTask(Task):
    """An evaluation-only benchmark on the retrieval model (module docstring)."""

    finetune_description = None
    selection = None
    benchmark_name: ClassVar[str] = ""

    def train_dataset(self) -> Dataset[Any]:
        raise ConfigError(f"{self.cfg.task} is a benchmark: it evaluates, it does not train")

    def collator(self) -> Any:
        raise ConfigError(f"{self.cfg.task} is a benchmark: it evaluates, it does not train")

    def objective(self) -> Objective:
        raise ConfigError(f"{self.cfg.task} is a benchmark: it evaluates, it does not train")

    def report_stem(self, split: str) -> str:
        return f"{self.cfg.task}-{self.dataset_name()}-{split}"

    def benchmark(self, split: str) -> tuple[Benchmark, Path, str]:
        """The split's examples as a benchmark, its image root, and the file named in errors."""
        raise NotImplementedError

    def evaluator(self, split: str, precision: Precision, **unused: Any) -> CompositionalEvaluator:
        del unused
        data = self.cfg.data
        if data.bad_images != "error":
            raise ConfigError(f"{self.cfg.task} scores every example: data.bad_images must be 'error'")
        benchmark, root, source = self.benchmark(split)
        return CompositionalEvaluator(
            self.cfg.task, benchmark, root, build_test_transform(self.cfg.model.vision.image_res),
            self.tokenizer, precision, data.batch_size_test, data.max_words, data.max_tokens_eval or 30,
            data.num_workers, source,
        )  # fmt: skip

    def sample_records(self, result: EvalResult, split: str) -> list[dict[str, Any]]:
        """Every example with its captions and the scores of each scorer."""
        return list(result.outputs["samples"])

    def _root(self, split: str) -> Path:
        data = self.cfg.data
        return data_path(data, data.split_image_roots.get(split, data.image_root))

    def _split_file(self, split: str) -> Path:
        name = self.cfg.data.split_files.get(split)
        if not name:
            raise ConfigError(
                f"{self.cfg.task}: the config names no file for split {split!r} (data.split_files)"
            )
        return data_path(self.cfg.data, name)


class WinogroundTask(BenchmarkTask):
    """Winoground: text, image and group scores (Thrush et al. 2022)."""

    help = "Winoground: text / image / group scores with ITC, ITM and ITM + ITC"
    evaluate_description = (
        "Evaluate on Winoground (data.test_file: examples.jsonl; data.image_root: its images): for each pair of\n"
        "images and captions made of the same words, the text score (each image prefers its caption), the image\n"
        "score (each caption prefers its image) and the group score (both); chance 25 / 25 / 16.7 %, per\n"
        "collapsed tag too.\n\n" + SCORING
    )
    splits = ("test",)
    report_dataset = "winoground"

    def benchmark(self, split: str) -> tuple[Benchmark, Path, str]:
        if not self.cfg.data.test_file:
            raise ConfigError("winoground needs data.test_file (examples.jsonl)")
        path = data_path(self.cfg.data, self.cfg.data.test_file)
        return WinogroundBenchmark(read_winoground(path)), self._root(split), str(path)


class SugarCrepeTask(BenchmarkTask):
    """SugarCrepe: positive vs hard-negative caption, accuracy per subset and their macro average."""

    help = "SugarCrepe: positive vs hard negative, per subset and macro, with ITC, ITM and ITM + ITC"
    evaluate_description = (
        "Evaluate on SugarCrepe (data.split_files: one file per subset, replace_obj ... swap_att; data.image_root:\n"
        "COCO val2017): an example is right when its caption scores strictly above its hard negative; accuracy\n"
        "per subset (chance 50 %), the macro average over subsets and the accuracy over all examples.\n\n"
        + SCORING
    )
    splits = ("test",)
    report_dataset = "sugarcrepe"

    def benchmark(self, split: str) -> tuple[Benchmark, Path, str]:
        files = self.cfg.data.split_files
        if not files:
            raise ConfigError("sugarcrepe needs data.split_files (subset -> file)")
        unknown = sorted(set(files) - set(SUGARCREPE_SUBSETS) - set(EXTRA_SUBSETS))
        if unknown:
            raise ConfigError(
                f"sugarcrepe: unknown subset {unknown[0]!r}; valid: {', '.join(SUGARCREPE_SUBSETS)}"
            )
        examples = []
        for subset, name in files.items():
            path = data_path(self.cfg.data, name)
            if path.is_dir():
                path = sugarcrepe_file(path, subset)
            examples += read_sugarcrepe(path, subset)
        benchmark = ContrastBenchmark(examples, "subset", macro=True)
        return (
            benchmark,
            self._root(split),
            ", ".join(str(data_path(self.cfg.data, n)) for n in files.values()),
        )


class AROTask(BenchmarkTask):
    """ARO: VG-Relation, VG-Attribution, COCO-Order and Flickr30K-Order (Yuksekgonul et al. 2023)."""

    help = "ARO: VG-Relation / VG-Attribution / COCO- and Flickr30K-Order with ITC, ITM and ITM + ITC"
    evaluate_description = (
        "Evaluate on ARO (--split vg_relation, vg_attribution, coco_order or flickr_order; data.split_files names\n"
        "each split's file, data.split_image_roots its images): VG-Relation and VG-Attribution crop each image to\n"
        "its box and compare the true caption with the swapped one (chance 50 %; headline: macro accuracy over\n"
        "relations without data.excluded_relations, over attribute pairs with >= 25 examples); the Order sets\n"
        "compare each Karpathy-test caption with four word-order perturbations (chance 20 %; spaCy's tagger\n"
        "finds nouns and adjectives).\n\n" + SCORING
    )
    splits = ("vg_relation", "vg_attribution", "coco_order", "flickr_order")
    report_dataset = "aro"
    # The synthetic world has no ARO-style set (its probes are Winoground and SugarCrepe style).
    default_config = "aro"

    def benchmark(self, split: str) -> tuple[Benchmark, Path, str]:
        path = self._split_file(split)
        data = self.cfg.data
        if split == "vg_relation":
            excluded: list[str] = []
            if data.excluded_relations:
                excluded = read_relation_list(data_path(data, data.excluded_relations))
            examples = read_aro_vg(path, split)
            return ContrastBenchmark(examples, "relation", excluded=excluded), self._root(split), str(path)
        if split == "vg_attribution":
            examples = read_aro_vg(path, split)
            benchmark = ContrastBenchmark(examples, "attribute pair", min_count=ARO_MIN_ATTRIBUTE_EXAMPLES)
            return benchmark, self._root(split), str(path)
        orders = order_examples(
            read_caption_images(path), spacy_tagger(), self.cfg.runtime.seed, data.max_words, group=split
        )
        return ContrastBenchmark(orders, "set", macro=False, ties_win=True), self._root(split), str(path)


TASKS.add("winoground", WinogroundTask, "Winoground: text / image / group scores (ITC, ITM, ITM + ITC)")
TASKS.add("sugarcrepe", SugarCrepeTask, "SugarCrepe: hard-negative accuracy per subset (ITC, ITM, ITM + ITC)")
TASKS.add("aro", AROTask, "ARO: relation, attribution and word-order accuracy (ITC, ITM, ITM + ITC)")
