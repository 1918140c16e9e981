"""ALBEF model parts and task models."""

from albef.models.albef import ALBEFPretrain, ALBEFRetrieval, ImageEncoding, TextEncoding
from albef.models.builders import MODEL_PRESETS, TASK_MODELS, create_model, model_preset
from albef.models.classify import ALBEFNLVR, ALBEFVE, ALBEFTextAssignment
from albef.models.vqa import ALBEFVQA, RankedAnswers

__all__ = [
    "ALBEFNLVR",
    "ALBEFVE",
    "ALBEFVQA",
    "MODEL_PRESETS",
    "TASK_MODELS",
    "ALBEFPretrain",
    "ALBEFRetrieval",
    "ALBEFTextAssignment",
    "ImageEncoding",
    "RankedAnswers",
    "TextEncoding",
    "create_model",
    "model_preset",
]
