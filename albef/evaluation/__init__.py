"""Evaluation: pure, chunked metrics and the per-task evaluators."""

from albef.evaluation.metrics import ranks_of_targets, retrieval_metrics

__all__ = ["ranks_of_targets", "retrieval_metrics"]
from albef.evaluation.vqa import VQAEvaluator, VQASplit
from albef.evaluation.vqa_eval import (
    GroundTruth,
    VQAAccuracy,
    answer_accuracy,
    normalize_answer,
    vqa_accuracy,
)
from albef.evaluation.vqa_files import read_result_file, read_vqa_annotations, write_result_file

__all__ += [
    "GroundTruth",
    "VQAAccuracy",
    "VQAEvaluator",
    "VQASplit",
    "answer_accuracy",
    "normalize_answer",
    "read_result_file",
    "read_vqa_annotations",
    "vqa_accuracy",
    "write_result_file",
]
from albef.evaluation.classify import NLVREvaluator, VEEvaluator  # noqa: E402  (appended section)
from albef.evaluation.nlvr_eval import (  # noqa: E402
    MissingPredictionsError,
    NLVRScore,
    consistency,
    read_predictions,
    score_nlvr,
    score_predictions,
    write_predictions,
)

__all__ += [
    "MissingPredictionsError",
    "NLVREvaluator",
    "NLVRScore",
    "VEEvaluator",
    "consistency",
    "read_predictions",
    "score_nlvr",
    "score_predictions",
    "write_predictions",
]
from albef.evaluation.encode import RetrievalFeatures  # noqa: E402
from albef.evaluation.feature_cache import FeatureCache  # noqa: E402
from albef.evaluation.memory_plan import FusionDims, plan_memory  # noqa: E402
from albef.evaluation.metrics import OFFICIAL_KEYS, recall_at_k, retrieval_ranks, topk_candidates  # noqa: E402
from albef.evaluation.pair_scorer import PairScorer  # noqa: E402
from albef.evaluation.rerank import one_query_rerank  # noqa: E402
from albef.evaluation.retrieval import (  # noqa: E402
    RetrievalEvaluator,
    RetrievalSettings,
    read_eval_split,
    settings_from_config,
)

__all__ += [
    "OFFICIAL_KEYS",
    "FeatureCache",
    "FusionDims",
    "PairScorer",
    "RetrievalEvaluator",
    "RetrievalFeatures",
    "RetrievalSettings",
    "one_query_rerank",
    "plan_memory",
    "read_eval_split",
    "recall_at_k",
    "retrieval_ranks",
    "settings_from_config",
    "topk_candidates",
]
