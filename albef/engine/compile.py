"""``runtime.compile``: ``torch.compile`` of the encoders and the fusion path, in place.

Each image encoder (student and teacher) is compiled whole, and every BERT layer of the text and fusion stacks
on its own (the stacks are entered through ``forward_text`` / ``forward_fusion``, which ``Module.compile``
would not reach). ``Module.compile`` keeps the parameters where they are, so state dicts, checkpoints, the
EMA teachers and the optimizer see the same tensors under the same names. The ITM re-ranker of retrieval
evaluation runs its own batched layer code and is not compiled.
"""

from __future__ import annotations

from torch import nn

from albef.models.bert import BertLayer
from albef.models.vision import VisionEncoder


def compile_model(model: nn.Module, mode: str = "default") -> int:
    """Compile ``model``'s image encoders and BERT layers in place; returns how many modules were compiled."""
    compiled = 0
    for module in model.modules():
        if isinstance(module, (VisionEncoder, BertLayer)):
            module.compile(mode=mode)
            compiled += 1
    return compiled
