"""The training losses of ``nlvr.pt`` and ``ve.pt``, recomputed by the production objectives.

The official call is ``model(..., targets, train=True, alpha=0.4)`` in eval mode: the student pass, one EMA
step of the teachers (whose weights differ from the students' in the fixtures), the teacher pass, then
``(1 - alpha) * CE + alpha * soft CE``. :class:`~albef.tasks.nlvr.NLVRObjective` and
:class:`~albef.tasks.nlvr.VEObjective` do the same on a deep copy of the fixture model, so the EMA step
leaves the shared model untouched. There is no random draw in eval mode.
"""

from __future__ import annotations

import copy
from typing import cast

from torch import Tensor

from albef.data.collate import LabelledBatch, PairBatch
from albef.data.tokenizer import TokenBatch
from albef.models.classify import ALBEFNLVR, ALBEFVE
from albef.tasks.nlvr import NLVRObjective, VEObjective
from albef.verification.reference import FixtureContext, output_check


@output_check("nlvr", "train_loss")
def _nlvr_train_loss(ctx: FixtureContext) -> Tensor:
    """NLVRObjective: (1-a) CE + a soft CE against the teacher after one EMA step (alpha from the fixture)."""
    inputs = ctx.fixture.inputs
    model = cast(ALBEFNLVR, copy.deepcopy(ctx.model))
    text = TokenBatch(inputs["input_ids"], inputs["attention_mask"])
    batch = PairBatch(inputs["image0"], inputs["image1"], text, inputs["targets"])
    return NLVRObjective()(model, batch, float(inputs["alpha"]))["cls_loss"]


@output_check("ve", "train_loss")
def _ve_train_loss(ctx: FixtureContext) -> Tensor:
    """VEObjective: (1-a) CE + a soft CE against the teacher after one EMA step (alpha from the fixture)."""
    inputs = ctx.fixture.inputs
    model = cast(ALBEFVE, copy.deepcopy(ctx.model))
    text = TokenBatch(inputs["input_ids"], inputs["attention_mask"])
    batch = LabelledBatch(inputs["image"], text, inputs["targets"])
    return VEObjective()(model, batch, float(inputs["alpha"]))["cls_loss"]
