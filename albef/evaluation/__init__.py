"""Evaluation: pure, chunked metrics and the per-task evaluators."""

from albef.evaluation.metrics import ranks_of_targets, retrieval_metrics

__all__ = ["ranks_of_targets", "retrieval_metrics"]
