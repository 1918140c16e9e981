"""Data: official annotation formats, typed records and text cleaning.

Importing this package has no side effects and pulls in no heavy dependency (pycocotools is imported only
by the COCO reader).
"""

from albef.data.errors import DataError
from albef.data.formats import (
    nlvr_consistency_groups,
    nlvr_group_key,
    read_answer_list,
    read_coco_captions,
    read_maccap_flickr,
    read_nlvr,
    read_nlvr_lil,
    read_pretrain,
    read_retrieval_eval,
    read_retrieval_train,
    read_ve,
    read_vqa_test,
    read_vqa_train,
    read_vqa_v2,
    vqa_answer_weights,
)
from albef.data.records import (
    NLVRRecord,
    PretrainRecord,
    RetrievalEvalSet,
    RetrievalTrainRecord,
    VERecord,
    VQARecord,
)
from albef.data.text import pre_caption, pre_question

__all__ = [
    "DataError",
    "NLVRRecord",
    "PretrainRecord",
    "RetrievalEvalSet",
    "RetrievalTrainRecord",
    "VERecord",
    "VQARecord",
    "nlvr_consistency_groups",
    "nlvr_group_key",
    "pre_caption",
    "pre_question",
    "read_answer_list",
    "read_coco_captions",
    "read_maccap_flickr",
    "read_nlvr",
    "read_nlvr_lil",
    "read_pretrain",
    "read_retrieval_eval",
    "read_retrieval_train",
    "read_ve",
    "read_vqa_test",
    "read_vqa_train",
    "read_vqa_v2",
    "vqa_answer_weights",
]
