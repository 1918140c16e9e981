"""Per-sample records of an evaluation (``albef evaluate <task> --log-samples``), one JSON object per item, so
that a user can look at the failures: what each query ranked first, which answers a question weighed, which
class each pair got.

- retrieval: every image query and every caption query with the ``top`` best candidates (id, text or image,
  score, whether it is a ground truth) and the 0-based rank of its best ground truth, by the tie rule the
  metrics use;
- VQA: every question with its chosen answer, its ranked answers with their probabilities (softmax over the
  re-ranked candidates, as the official decoder ranks them) and, where the split has them, the annotators'
  answers and the question's accuracy;
- NLVR² and SNLI-VE: every example with its logits, the predicted and the true class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from albef.data.records import RetrievalEvalSet
from albef.evaluation.metrics import retrieval_ranks, topk_candidates

TOP = 10
"""Candidates listed per retrieval query."""


def _top(scores: Tensor, top: int) -> list[list[tuple[int, float]]]:
    """Per row of ``scores``, its ``top`` best columns with their scores, best first (ties: lower index first,
    by the ranking's own partial selection)."""
    values, indices = topk_candidates(scores, top)
    return [
        [(i, round(v, 6)) for i, v in zip(row_i, row_v, strict=True)]
        for row_i, row_v in zip(indices.tolist(), values.tolist(), strict=True)
    ]


def retrieval_samples(
    scores_i2t: Tensor, scores_t2i: Tensor, split: RetrievalEvalSet, top: int = TOP
) -> list[dict[str, Any]]:
    """Image queries first (in split order), then caption queries (module docstring)."""
    img_ranks, txt_ranks = retrieval_ranks(scores_i2t, scores_t2i, split.img2txt, split.txt2img)
    best_texts, best_images = _top(scores_i2t, top), _top(scores_t2i, top)
    records: list[dict[str, Any]] = []
    for i, image in enumerate(split.images):
        truth = set(split.img2txt[i])
        records.append(
            {
                "query": "image", "image_id": i, "image": image, "rank": int(img_ranks[i]),
                "true_text_ids": sorted(truth),
                "top": [
                    {"text_id": t, "caption": split.texts[t], "score": s, "true": t in truth}
                    for t, s in best_texts[i]
                ],
            }
        )  # fmt: skip
    for t, caption in enumerate(split.texts):
        owner = split.txt2img[t]
        records.append(
            {
                "query": "text", "text_id": t, "caption": caption, "rank": int(txt_ranks[t]),
                "true_image_id": owner,
                "top": [
                    {"image_id": i, "image": split.images[i], "score": s, "true": i == owner}
                    for i, s in best_images[t]
                ],
            }
        )  # fmt: skip
    return records


def vqa_samples(
    answers: Mapping[int, str],
    ranked: Mapping[int, Sequence[tuple[str, float]]],
    truths: Mapping[int, Sequence[str]] | None = None,
    accuracy: Mapping[int, float] | None = None,
) -> list[dict[str, Any]]:
    """One record per answered question: ``answer``, ``ranked`` ``[answer, probability]`` pairs and, with ground
    truth, ``truth`` (the annotators' answers) and ``accuracy`` (the official per-question accuracy, 0-1)."""
    records = []
    for qid, answer in answers.items():
        record: dict[str, Any] = {"question_id": qid, "answer": answer}
        record["ranked"] = [[a, round(float(p), 6)] for a, p in ranked.get(qid, ())]
        if truths is not None and qid in truths:
            record["truth"] = list(truths[qid])
        if accuracy is not None and qid in accuracy:
            record["accuracy"] = accuracy[qid]
        records.append(record)
    return records


def classification_samples(
    logits: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    identifiers: Sequence[Any] | None = None,
    evaluated: Sequence[bool] | None = None,
) -> list[dict[str, Any]]:
    """One record per example: ``logits``, ``predicted`` and ``true`` class names (``null`` prediction for an
    example that was not evaluated, e.g. a skipped image)."""
    records = []
    for n in range(labels.shape[0]):
        done = True if evaluated is None else bool(evaluated[n])
        record: dict[str, Any] = {"index": n}
        if identifiers is not None:
            record["identifier"] = identifiers[n]
        record["logits"] = [round(float(v), 6) for v in logits[n].tolist()] if done else None
        record["predicted"] = class_names[int(logits[n].argmax())] if done else None
        record["true"] = class_names[int(labels[n])]
        records.append(record)
    return records
