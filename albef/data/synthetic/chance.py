"""Chance levels of every task of a world, so that a trained model's numbers can be read against them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from math import comb
from typing import Any

RECALL_KS: tuple[int, ...] = (1, 5, 10)


def _recall_any(n_candidates: int, n_relevant: int, k: int) -> float:
    """P(at least one of ``n_relevant`` items is in the top ``k`` of a uniformly random ranking)."""
    k = min(k, n_candidates)
    return 1.0 - comb(n_candidates - n_relevant, k) / comb(n_candidates, k)


def retrieval_chance(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Expected recall@K of a random ranking on a Karpathy eval split (one record per image).

    Text→image: each caption has one relevant image among the N images. Image→text: each image has its c
    captions among all C captions, and a hit is any of them in the top K.

    Returns:
        ``{"t2i_r1": ..., "i2t_r1": ..., ...}`` for K in :data:`RECALL_KS`.
    """
    n_images = len(records)
    n_texts = sum(len(r["caption"]) for r in records)
    result = {}
    for k in RECALL_KS:
        result[f"t2i_r{k}"] = min(k, n_images) / n_images
        per_image = [_recall_any(n_texts, len(r["caption"]), k) for r in records]
        result[f"i2t_r{k}"] = sum(per_image) / n_images
    return result


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The official VQA accuracy of one prediction: the mean over the 10 leave-one-out subsets of
    min(1, matches among the other 9 / 3)."""
    scores = []
    for i in range(len(answers)):
        others = [*answers[:i], *answers[i + 1 :]]
        scores.append(min(1.0, sum(a == prediction for a in others) / 3.0))
    return sum(scores) / len(scores)


def _majority(answers: Sequence[str]) -> str:
    counts = Counter(answers)
    return min(counts, key=lambda a: (-counts[a], a))


def vqa_chance(
    train: Sequence[Mapping[str, Any]], annotations: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Accuracy on the test annotations of always answering the most common training answer.

    ``overall`` uses the single most common answer of all training questions; each answer type uses the
    most common training answer of that type (the classic "prior per answer type" baseline, which the
    overall number is *not* the average of). Training questions get their type from the answer: digits are
    "number", yes/no is "yes/no", the rest "other".
    """
    by_type: dict[str, list[str]] = {}
    for record in train:
        if record.get("dataset") != "vqa":
            continue
        answer = _majority(record["answer"])
        by_type.setdefault(_answer_type(answer), []).append(answer)
    overall_answer = _majority([a for answers in by_type.values() for a in answers])
    result: dict[str, Any] = {"majority_answer": overall_answer}
    test_answers = [[a["answer"] for a in ann["answers"]] for ann in annotations]
    result["overall"] = sum(vqa_accuracy(overall_answer, a) for a in test_answers) / len(test_answers)
    for answer_type in ("yes/no", "number", "other"):
        group = [
            [a["answer"] for a in ann["answers"]] for ann in annotations if ann["answer_type"] == answer_type
        ]
        prior = _majority(by_type[answer_type]) if by_type.get(answer_type) else ""
        result[answer_type] = {
            "majority_answer": prior,
            "accuracy": sum(vqa_accuracy(prior, a) for a in group) / len(group) if group else 0.0,
            "questions": len(group),
        }
    return result


def _answer_type(answer: str) -> str:
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.isdigit() else "other"


def majority_rate(labels: Sequence[str]) -> dict[str, Any]:
    """Share of the most common label (ties broken alphabetically) and which label it is."""
    label = _majority(labels)
    return {"label": label, "rate": Counter(labels)[label] / len(labels)}


def nlvr_chance(raw: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Majority-label accuracy and the consistency of uniform random guessing on a lil-lab split.

    A group (identifier with the pair id blanked) is consistent when all its examples are right, which a
    coin flip achieves with probability 0.5 ** group size.
    """
    groups = Counter(_group_key(r["identifier"]) for r in raw)
    result = majority_rate([r["label"] for r in raw])
    result["random_consistency"] = sum(0.5**size for size in groups.values()) / len(groups)
    result["groups"] = len(groups)
    return result


def _group_key(identifier: str) -> str:
    split, set_id, _, sentence_id = identifier.split("-")
    return f"{split}-{set_id}-*-{sentence_id}"


def world_chance(files: Mapping[str, Any]) -> dict[str, Any]:
    """Chance levels of every task from a world's file contents (path -> parsed JSON)."""
    return {
        "retrieval_val": retrieval_chance(files["retrieval_val.json"]),
        "retrieval_test": retrieval_chance(files["retrieval_test.json"]),
        "vqa_test": vqa_chance(files["vqa_train.json"], files["vqa_v2/annotations_test.json"]["annotations"]),
        "nlvr_dev": nlvr_chance(files["nlvr_raw/dev.jsonl"]),
        "nlvr_test": nlvr_chance(files["nlvr_raw/test.jsonl"]),
        "ve_dev": majority_rate([r["label"] for r in files["ve_dev.json"]]),
        "ve_test": majority_rate([r["label"] for r in files["ve_test.json"]]),
        "ve_hypothesis_only_ceiling": 2 / 3,
        "text_assignment": 1 / 3,
    }
