"""Reading a prepared file back through its official-format reader, to count it and list its images."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from albef.data import formats
from albef.data.errors import DataError
from albef.data.formats_base import load_json, top_level_object
from albef.data.formats_compositional import (
    ContrastExample,
    read_aro_vg,
    read_relation_list,
    read_sugarcrepe,
    read_winoground,
)
from albef.data.formats_grounding import read_dets, read_grounding_eval, read_grounding_train
from albef.data.records import RetrievalEvalSet, VQARecord


# ----------------------------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class Contents:
    """What an output holds: its counts and the image paths it references (relative to its image root)."""

    counts: dict[str, int]
    images: list[str]


def _distinct(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _eval_contents(split: RetrievalEvalSet) -> Contents:
    return Contents({"images": split.num_images, "texts": split.num_texts}, _distinct(split.images))


def _records_contents(images: list[str], records: int) -> Contents:
    distinct = _distinct(images)
    return Contents({"records": records, "images": len(distinct)}, distinct)


def _pretrain(path: Path) -> Contents:
    recs = formats.read_pretrain(path)
    images = _distinct(r.image for r in recs)
    return Contents({"records": len(recs), "texts": sum(len(r.captions) for r in recs)}, images)


def _retrieval_train(path: Path) -> Contents:
    recs = formats.read_retrieval_train(path)
    return _records_contents([r.image for r in recs], len(recs))


def _vqa(read: Callable[[Path], list[VQARecord]]) -> Callable[[Path], Contents]:
    def contents(path: Path) -> Contents:
        recs = read(path)
        return _records_contents([r.image for r in recs], len(recs))

    return contents


def _nlvr(path: Path) -> Contents:
    recs = formats.read_nlvr(path)
    return _records_contents([image for r in recs for image in r.images], len(recs))


def _ve(path: Path) -> Contents:
    recs = formats.read_ve(path)
    return _records_contents([r.image for r in recs], len(recs))


def _answer_list(path: Path) -> Contents:
    return Contents({"records": len(formats.read_answer_list(path))}, [])


def _grounding_train(path: Path) -> Contents:
    recs = read_grounding_train(path)
    return _records_contents([r.image for r in recs], len(recs))


def _grounding_eval(path: Path) -> Contents:
    recs = read_grounding_eval(path)
    return _records_contents([r.image for r in recs], len(recs))


def _grounding_dets(path: Path) -> Contents:
    dets = read_dets(path)
    return Contents({"images": len(dets), "proposals": sum(len(b) for b in dets.values())}, [])


def _refer_refs(path: Path) -> Contents:
    refs = load_json(path)
    if not isinstance(refs, list):
        raise DataError(path, f"expected a list of refs, got {type(refs).__name__}")
    return Contents({"refs": len(refs)}, [])


def _refer_instances(path: Path) -> Contents:
    coco = top_level_object(path)
    return Contents(
        {"images": len(list(coco.objects("images"))), "annotations": len(list(coco.objects("annotations")))},
        [],
    )


def _winoground(path: Path) -> Contents:
    examples = read_winoground(path)
    return _records_contents([i for ex in examples for i in ex.images], len(examples))


def _contrast(read: Callable[[Path], list[ContrastExample]]) -> Callable[[Path], Contents]:
    def contents(path: Path) -> Contents:
        examples = read(path)
        return _records_contents([ex.image for ex in examples], len(examples))

    return contents


def _relation_list(path: Path) -> Contents:
    return Contents({"relations": len(read_relation_list(path))}, [])


FORMATS: dict[str, Callable[[Path], Contents]] = {
    "pretrain": _pretrain,
    "retrieval_train": _retrieval_train,
    "retrieval_eval": lambda path: _eval_contents(formats.read_retrieval_eval(path)),
    "vqa_train": _vqa(formats.read_vqa_train),
    "vqa_test": _vqa(formats.read_vqa_test),
    "answer_list": _answer_list,
    "nlvr": _nlvr,
    "ve": _ve,
    "grounding_train": _grounding_train,
    "grounding_eval": _grounding_eval,
    "grounding_dets": _grounding_dets,
    "refer_refs": _refer_refs,
    "refer_instances": _refer_instances,
    "winoground": _winoground,
    "sugarcrepe": _contrast(lambda path: read_sugarcrepe(path, path.stem)),
    "aro_vg_relation": _contrast(lambda path: read_aro_vg(path, "vg_relation")),
    "aro_vg_attribution": _contrast(lambda path: read_aro_vg(path, "vg_attribution")),
    "relation_list": _relation_list,
}
"""Output format -> reader-backed summary; every output is read back through the official-format reader."""
