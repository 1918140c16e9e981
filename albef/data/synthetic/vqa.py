"""VQA data: ALBEF's ``vqa_train.json`` (with VG-style records), ``vqa_test.json``, ``answer_list.json``,
and the test split again as official VQA v2 question and annotation files."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from albef.data.synthetic.plan import Plan, PlannedImage
from albef.data.synthetic.questions import KINDS, Question, human_answers, make_question
from albef.data.synthetic.scene import Scene, sample_scene
from albef.data.synthetic.sizes import SizeSpec

V2_IMAGE_TEMPLATE = "images/vqa_{subtype}/{image_id:06d}.png"
"""Image path of a VQA v2-style question from the file's ``data_subtype`` and the question's ``image_id``."""

V2_HEADER: dict[str, Any] = {
    "info": {
        "description": "albef synthetic world: VQA v2-style test split",
        "url": "",
        "version": "1.0",
        "year": 2021,
        "contributor": "albef.data.synthetic",
        "date_created": "",
    },
    "task_type": "Open-Ended",
    "data_type": "synthetic",
    "license": {
        "url": "https://creativecommons.org/publicdomain/zero/1.0/",
        "name": "CC0 1.0 (generated data)",
    },
    "data_subtype": "test",
}


def _image_questions(scene: Scene, n: int, rng: random.Random, yes_no: Counter[str]) -> list[Question]:
    """Up to ``n`` questions of different kinds; existence answers are kept balanced through ``yes_no``."""
    kinds = list(KINDS)
    rng.shuffle(kinds)
    questions: list[Question] = []
    for kind in kinds * 2:
        if len(questions) == n:
            break
        question = make_question(scene, rng, kind, want_yes=yes_no["yes"] <= yes_no["no"])
        if question is None or any(q.text == question.text for q in questions):
            continue
        if question.answer_type == "yes/no":
            yes_no[question.answer] += 1
        questions.append(question)
    return questions


def _split(plan: Plan, split: str, n_images: int, per_image: int) -> list[tuple[PlannedImage, int, Question]]:
    """(image, question_id, question) triples; question ids are ``image_id * 1000 + k`` as in VQA v2."""
    rng = plan.stream(f"vqa_{split}")
    yes_no: Counter[str] = Counter()
    triples = []
    for _ in range(n_images):
        scene = sample_scene(rng)
        image = plan.add_image(f"vqa_{split}", scene)
        for k, question in enumerate(_image_questions(scene, per_image, rng, yes_no)):
            triples.append((image, image.image_id * 1000 + k, question))
    return triples


def _train_records(plan: Plan, spec: SizeSpec) -> list[dict[str, Any]]:
    rng = plan.stream("vqa_train_answers")
    records: list[dict[str, Any]] = []
    for image, question_id, question in _split(plan, "train", spec.vqa_images[0], spec.questions_per_image):
        answers = [a for a, _ in human_answers(question, rng)]
        records.append(
            {
                "question_id": question_id,
                "question": question.text,
                "answer": answers,
                "image": image.path,
                "dataset": "vqa",
            }
        )
    n_vqa = len(records)
    for image, _, question in _split(plan, "vg", spec.vg_images, spec.questions_per_image):
        records.append(
            {"question": question.text, "answer": question.answer, "image": image.path, "dataset": "vg"}
        )
    plan.splits["vqa_train"] = {"images": spec.vqa_images[0], "questions": n_vqa}
    plan.splits["vqa_vg"] = {"images": spec.vg_images, "questions": len(records) - n_vqa}
    return records


def _annotation(image_id: int, question_id: int, question: Question, rng: random.Random) -> dict[str, Any]:
    answers = human_answers(question, rng)
    return {
        "question_id": question_id,
        "image_id": image_id,
        "question_type": question.question_type,
        "answer_type": question.answer_type,
        "multiple_choice_answer": Counter(a for a, _ in answers).most_common(1)[0][0],
        "answers": [
            {"answer": a, "answer_confidence": c, "answer_id": i + 1} for i, (a, c) in enumerate(answers)
        ],
    }


def _answer_list(train: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> list[str]:
    counts: Counter[str] = Counter()
    for record in train:
        counts.update(record["answer"] if isinstance(record["answer"], list) else [record["answer"]])
    for annotation in annotations:
        counts.update(a["answer"] for a in annotation["answers"])
    return [answer for answer, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def build_vqa(plan: Plan, spec: SizeSpec) -> None:
    """All VQA files: ALBEF train/test, the candidate answer list, and VQA v2 test questions/annotations."""
    train = _train_records(plan, spec)
    rng = plan.stream("vqa_test_answers")
    test: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image, question_id, question in _split(plan, "test", spec.vqa_images[1], spec.questions_per_image):
        test.append(
            {"question_id": question_id, "question": question.text, "image": image.path, "dataset": "vqa"}
        )
        questions.append({"image_id": image.image_id, "question": question.text, "question_id": question_id})
        annotations.append(_annotation(image.image_id, question_id, question, rng))
    plan.files["vqa_train.json"] = train
    plan.files["vqa_test.json"] = test
    answer_list = _answer_list(train, annotations)
    plan.files["answer_list.json"] = answer_list
    plan.files["vqa_v2/questions_test.json"] = {**V2_HEADER, "questions": questions}
    plan.files["vqa_v2/annotations_test.json"] = {**V2_HEADER, "annotations": annotations}
    plan.splits["vqa_test"] = {"images": spec.vqa_images[1], "questions": len(test)}
    plan.info["vqa_v2_image_template"] = V2_IMAGE_TEMPLATE
    plan.texts.extend(r["question"] for r in train)
    plan.texts.extend(r["question"] for r in test)
    plan.texts.extend(answer_list)
