"""Autocast safety: every task model runs under CPU bf16 autocast and stays close to float32."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.models import TASKS, images, texts, tiny_model

REL_TOL = 0.05
SIM_TOL = 0.01
"""Of the largest possible ITC logit, 1/temp."""
"""Allowed max |bf16 - fp32| as a fraction of max |fp32| (observed: <= 0.021 on these inputs)."""


def _outputs(task: str, model: nn.Module) -> dict[str, Tensor]:
    """The main inference outputs of each task model on a tiny padded batch."""
    image, second, (ids, mask) = images(3), images(3, seed=1), texts([9, 6, 4])
    if task in ("pretrain", "retrieval"):
        img, txt = model.encode_image(image), model.encode_text(ids, mask)
        sim_i2t, _ = model.similarity(img.feat, txt.feat)
        out = {"sim_i2t": sim_i2t, "itm": model.itm_logits(model.fuse(txt, img.embeds))}
        if task == "pretrain":
            out["mlm"] = model.mlm_logits(ids, mask, img.embeds)
        return out
    if task == "vqa":
        states = model.encode_question(image, ids, mask)
        answers, answer_mask = texts([3, 4, 3], pad_to=5, seed=3)
        return {"question": states, "decoder": model.decoder_logits(answers, answer_mask, states, mask)}
    if task == "nlvr":
        return {"logits": model.logits(image, second, ids, mask)}
    if task == "nlvr_pretrain":
        first, other = model.visual_encoder(torch.cat([image, second])).split(3)
        return {"logits": model.logits(first, other, ids, mask)}
    return {"logits": model.logits(image, ids, mask)}


@pytest.mark.parametrize("task", TASKS)
def test_bf16_autocast_forward_is_close_to_fp32(task: str) -> None:
    model = tiny_model(task)
    with torch.no_grad():
        ref = _outputs(task, model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = _outputs(task, model)
    assert any(v.dtype == torch.bfloat16 for v in low.values()), "autocast did not engage"
    for name, value in low.items():
        assert torch.isfinite(value).all(), name
        # ITC logits are cosines over the temperature: their bf16 error scales with 1/temp, whatever the
        # largest logit a random initialisation happens to give (measured: 0.04 of 14.3 on two inits).
        bound = 1 / float(model.temp) if name == "sim_i2t" else float(ref[name].abs().max())
        atol = (SIM_TOL if name == "sim_i2t" else REL_TOL) * bound
        torch.testing.assert_close(value.float(), ref[name], atol=atol, rtol=0, msg=name)


@pytest.mark.slow
def test_compiled_encode_text_matches_eager() -> None:
    model = tiny_model("retrieval")
    ids, mask = texts([9, 6, 4])
    compiled = torch.compile(model.encode_text)
    with torch.no_grad():
        eager, out = model.encode_text(ids, mask), compiled(ids, mask)
    torch.testing.assert_close(out.states, eager.states, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.feat, eager.feat, atol=1e-5, rtol=1e-5)
