"""Retrieval evaluation: encode a split once, rank by ITC, re-rank the top k by ITM, score.

:class:`RetrievalEvaluator` runs five steps, each in a module named after it and called in this order:
:mod:`~albef.evaluation.encode` (or the :mod:`~albef.evaluation.feature_cache`, the memory plan in
:mod:`~albef.evaluation.memory_plan`) -> :mod:`~albef.evaluation.similarity` ->
:mod:`~albef.evaluation.candidates` -> :mod:`~albef.evaluation.rerank` (its scorer in
:mod:`~albef.evaluation.pair_scorer`) -> :mod:`~albef.evaluation.metrics`.

The protocol is the official one (spec §5.1): texts are ``pre_caption``-ed, padded to ``max_length`` (30)
with truncation and run through the text layers; images take the test transform; the ITC similarity
``image_feat @ text_feat.T`` (no temperature) picks each query's top k candidates; every candidate is scored
by the ITM head's match logit (``score="itm"``, the official default) or by that logit plus the ITC similarity
(``score="itm+itc"``, as LAVIS); every other cell holds -100. ``itc_only`` skips the re-ranking.

:class:`RetrievalEvaluator` runs it, timing each stage, with the re-ranking batched over many queries
(:mod:`albef.evaluation.rerank`) and, under ``torchrun``, its queries sharded over the ranks and the rows
gathered: the matrices are the same as in a single process. Features can be cached on disk
(:mod:`albef.evaluation.feature_cache`).

The memory plan of an evaluation (COCO-5k at 384 px included) is in :mod:`albef.evaluation.feature_cache`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import Module

from albef.config.schema import ExperimentConfig
from albef.data.errors import DataError
from albef.data.formats import read_coco_captions, read_maccap_flickr, read_retrieval_eval
from albef.data.records import RetrievalEvalSet
from albef.data.tokenizer import TextTokenizer
from albef.engine.distributed import World, all_gather_object
from albef.engine.precision import Precision
from albef.evaluation.base import EvalResult, Evaluator
from albef.evaluation.candidates import Candidates, select_candidates, shard_rows
from albef.evaluation.encode import RetrievalFeatures, encode_images, encode_split, encode_texts
from albef.evaluation.feature_cache import FeatureCache
from albef.evaluation.memory_plan import FEATURE_DTYPES, FusionDims, MemoryPlan, call_budget, plan_memory
from albef.evaluation.metrics import (
    TieRule,
    chance_recall_at_1,
    retrieval_metric_objects,
    retrieval_metrics,
)
from albef.evaluation.pair_scorer import PairScorer
from albef.evaluation.partial import PartialScores
from albef.evaluation.rerank import Reranked, ScoreMode, dense_scores, rerank_candidates
from albef.evaluation.rerank_store import RESIDENCIES, choose_residency
from albef.evaluation.similarity import itc_similarity
from albef.models.albef import ContrastiveALBEF
from albef.reporting.measure import StageTimer

__all__ = [
    "FEATURE_DTYPES",
    "FusionDims",
    "MemoryPlan",
    "RetrievalEvaluator",
    "RetrievalFeatures",
    "RetrievalSettings",
    "chance_recall_at_1",
    "encode_images",
    "encode_split",
    "encode_texts",
    "itc_retrieval_metrics",
    "itc_similarity",
    "plan_memory",
    "read_eval_split",
    "settings_from_config",
    "shard_rows",
]


def itc_retrieval_metrics(features: RetrievalFeatures, split: RetrievalEvalSet) -> dict[str, float]:
    """Retrieval metrics of the ITC ranking alone (no ITM re-ranking)."""
    sims = itc_similarity(features)
    return retrieval_metrics(sims, sims.T, split.img2txt, split.txt2img)


# -- splits ---------------------------------------------------------------------------------------------------
def read_eval_split(path: str | Path) -> RetrievalEvalSet:
    """Read a retrieval val/test file in any supported layout, recognised by its content.

    - the official list ``[{"image", "caption": [...]}]`` (:func:`~albef.data.formats.read_retrieval_eval`);
    - the MacCap Flickr30K list ``[{"image_name", "captions": [...]}]`` (:func:`read_maccap_flickr`);
    - a COCO caption file ``{"images", "annotations"}`` (:func:`read_coco_captions`).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(path, f"cannot read the file ({err.strerror or err})") from err
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err.msg})", line=err.lineno) from err
    if isinstance(data, dict) and "annotations" in data:
        return read_coco_captions(path)
    if isinstance(data, list) and data and isinstance(data[0], dict) and "image_name" in data[0]:
        return read_maccap_flickr(path)
    return read_retrieval_eval(path)


# -- the evaluator --------------------------------------------------------------------------------------------
@dataclass
class RetrievalSettings:
    """How a split is evaluated (defaults: the official COCO protocol).

    Attributes:
        k: Candidates re-ranked per query (official: 256 COCO, 128 Flickr30K).
        score: ``itm`` (official: the match logit) or ``itm+itc`` (LAVIS: logit + ITC similarity).
        itc_only: Rank by the ITC similarity alone (no re-ranking).
        image_res: Test resolution.
        batch_size: Images per encoder batch.
        text_batch_size: Texts per encoder batch.
        max_length: Token length texts are padded/truncated to.
        max_words: ``pre_caption`` word limit.
        feature_dtype: Storage of image tokens and text states (:data:`FEATURE_DTYPES`).
        budget_mb: Memory budget of one fusion call (MiB); ``None``: the device's default
            (:func:`~albef.evaluation.memory_plan.call_budget`).
        max_pairs_per_call: Cap on the pairs of one fusion call; ``None``: the device's default.
        residency: Where the features stay while re-ranking: ``auto`` (on the device when they fit),
            ``device`` or ``host`` (:mod:`~albef.evaluation.rerank_store`).
        num_workers: Image loader workers.
        ties: The tie rule of the ranks (:mod:`albef.evaluation.metrics`).
    """

    k: int = 256
    score: ScoreMode = "itm"
    itc_only: bool = False
    image_res: int = 384
    batch_size: int = 64
    text_batch_size: int = 256
    max_length: int = 30
    max_words: int = 30
    feature_dtype: str = "fp32"
    budget_mb: float | None = None
    max_pairs_per_call: int | None = None
    residency: str = "auto"
    num_workers: int = 0
    ties: TieRule = "lower_index_first"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.score not in ("itm", "itm+itc"):
            raise ValueError(f"score must be 'itm' or 'itm+itc', got {self.score!r}")
        if self.residency not in RESIDENCIES:
            raise ValueError(f"residency must be one of {', '.join(RESIDENCIES)}, got {self.residency!r}")
        if self.feature_dtype not in FEATURE_DTYPES:
            raise ValueError(
                f"feature_dtype must be one of {', '.join(FEATURE_DTYPES)}, got {self.feature_dtype!r}"
            )

    def encoding(self) -> dict[str, Any]:
        """The settings the features depend on (part of the cache key)."""
        return {
            "image_res": self.image_res,
            "max_length": self.max_length,
            "max_words": self.max_words,
            "feature_dtype": self.feature_dtype,
            "tokens": not self.itc_only,
        }


def settings_from_config(cfg: ExperimentConfig, **overrides: Any) -> RetrievalSettings:
    """The settings of ``cfg`` (``eval.k_test``, test resolution and batch sizes), then ``overrides``."""
    values: dict[str, Any] = {
        "k": cfg.eval.k_test,
        "image_res": cfg.model.vision.image_res,
        "batch_size": cfg.data.batch_size_test,
        "text_batch_size": cfg.eval.text_batch_size,
        "max_length": cfg.data.max_tokens_eval or 30,
        "max_words": cfg.data.max_words,
        "num_workers": cfg.data.num_workers,
    }
    return RetrievalSettings(**{**values, **overrides})


class RetrievalEvaluator(Evaluator):
    """Image-text retrieval on one split (module docstring).

    Args:
        split: The images, captions and links.
        image_root: Root of the split's relative image paths.
        tokenizer: The text tokenizer.
        precision: Device and autocast of the run.
        settings: The protocol (:class:`RetrievalSettings`).
        world: This process's place in the job: queries are sharded over ranks, rows gathered.
        cache: An on-disk feature cache, used when ``cache_key`` is given.
        cache_key: The features' key (:func:`~albef.evaluation.feature_cache.cache_key`).
        source: The annotation file, named in data errors.
        partial: Where the re-rank saves its partial results as it goes (``--resume`` continues from them).
    """

    task = "retrieval"

    def __init__(
        self,
        split: RetrievalEvalSet,
        image_root: str | Path,
        tokenizer: TextTokenizer,
        precision: Precision,
        settings: RetrievalSettings,
        *,
        world: World | None = None,
        cache: FeatureCache | None = None,
        cache_key: str | None = None,
        partial: PartialScores | None = None,
        source: str = "",
    ) -> None:
        self.split, self.image_root, self.tokenizer = split, image_root, tokenizer
        self.precision, self.settings = precision, settings
        self.world = world or World()
        self.cache, self.cache_key = cache, cache_key
        self.partial = partial
        self.source = source

    def features(self, model: ContrastiveALBEF, timer: StageTimer) -> tuple[RetrievalFeatures, str]:
        """The split's features from the cache or the encoders; also the cache status."""
        s = self.settings
        if self.cache is not None and self.cache_key is not None:
            hit = self.cache.load(self.cache_key, not s.itc_only)
            if hit is not None:
                return hit, "hit"
        features = encode_split(
            model, self.split, self.image_root, self.tokenizer, self.precision, s.image_res,
            batch_size=s.batch_size, text_batch_size=s.text_batch_size, max_length=s.max_length,
            max_words=s.max_words, keep_tokens=not s.itc_only, num_workers=s.num_workers, source=self.source,
            store_dtype=FEATURE_DTYPES[s.feature_dtype], timer=timer,
        )  # fmt: skip
        if self.cache is None or self.cache_key is None:
            return features, "disabled"
        if self.world.is_main:
            self.cache.save(self.cache_key, features)
        return features, self.cache.status

    @torch.inference_mode()
    def run(self, model: Module) -> EvalResult:
        """Encode, rank by ITC, re-rank the top k by ITM (unless ``itc_only``) and score the split."""
        model = _contrastive(model)
        was_training = model.training
        model.eval()
        try:
            return self._run(model)
        finally:
            model.train(was_training)

    def _run(self, model: ContrastiveALBEF) -> EvalResult:
        """The five steps in order: encode, ITC similarity, candidates, re-rank, metrics."""
        s = self.settings
        timer = StageTimer(self.precision.device)
        features, cache_status = self.features(model, timer)  # 1. encode (or the cache)
        n_img, n_txt = features.image_feat.shape[0], features.text_feat.shape[0]
        sims_on_device = itc_similarity(features, timer, self.precision.device)  # 2. ITC similarity
        sims = sims_on_device.cpu()
        extra: dict[str, Any] = {"cache": cache_status, "world_size": self.world.world_size, **asdict(s)}
        if s.itc_only:
            scores_i2t, scores_t2i = sims, sims.T.contiguous()
        else:
            chosen = select_candidates(sims_on_device, s.k, self.world, timer)  # 3. candidates
            scores_i2t, scores_t2i = self._rerank(model, features, sims, chosen, timer, extra)  # 4. re-rank
        metrics = retrieval_metric_objects(scores_i2t, scores_t2i, self.split, s.ties)  # 5. metrics
        extra["chance"] = chance_recall_at_1(self.split)
        if self.partial is not None:  # complete: the partial results are no longer needed
            extra["resumed_pairs"] = self.partial.resumed_pairs
            self.partial.clear()
        return EvalResult(
            metrics=metrics,
            n_samples=n_img + n_txt,
            stages=timer.stats(),
            memory=timer.peak_memory(),
            outputs={"scores_i2t": scores_i2t, "scores_t2i": scores_t2i, "itc": sims, "split": self.split},
            extra={"n_images": n_img, "n_texts": n_txt, **extra},
        )

    def _rerank(
        self,
        model: ContrastiveALBEF,
        features: RetrievalFeatures,
        sims: Tensor,
        chosen: Candidates,
        timer: StageTimer,
        extra: dict[str, Any],
    ) -> tuple[Tensor, Tensor]:
        """The two dense score matrices, re-ranked on this rank's queries and gathered from every rank."""
        s = self.settings
        if features.image_embeds is None or features.text_states is None:
            raise ValueError(
                "re-ranking needs the image tokens and text states (features were encoded ITC-only)"
            )
        device = self.precision.device
        budget_mb, max_pairs = call_budget(device, s.budget_mb, s.max_pairs_per_call)
        plan = plan_memory(
            FusionDims.of(model), sims.shape[0], sims.shape[1], features.image_embeds.shape[1], s.k, features.text_mask.shape[1],
            s.feature_dtype, 2 if self.precision.autocast_dtype is not None else 4, budget_mb, max_pairs,
        )  # fmt: skip
        residency = choose_residency(plan, device, s.residency)
        scorer = PairScorer(
            model, features.image_embeds, features.text_states, features.text_mask, device,
            self.precision.autocast, plan.pairs_per_call, s.text_batch_size, timer, residency["mode"],
        )  # fmt: skip
        local = rerank_candidates(scorer, chosen, sims.shape[1], self.partial)
        parts: list[Reranked] = all_gather_object(local)
        extra.update(
            memory_plan=plan.as_dict(),
            residency=residency,
            pairs_requested=sum(p.pairs_requested for p in parts),
            pairs_scored=sum(p.pairs_scored for p in parts),
            fusion_calls=scorer.calls,
        )
        add_itc = s.score == "itm+itc"
        return (
            dense_scores(parts, "i2t", tuple(sims.shape), add_itc),  # type: ignore[arg-type]
            dense_scores(parts, "t2i", (sims.shape[1], sims.shape[0]), add_itc),
        )


def _contrastive(model: Module) -> ContrastiveALBEF:
    """The model as a :class:`ContrastiveALBEF` (unwrapping DDP), or a ``TypeError``."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, ContrastiveALBEF):
        raise TypeError(
            f"retrieval evaluation needs a retrieval/pretraining model, got {type(inner).__name__}"
        )
    return inner
