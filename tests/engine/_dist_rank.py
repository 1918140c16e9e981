"""Helper of ``test_distributed``, run by ``torch.distributed.run``: train, then dump this rank's state.

``_dist_rank.py OUT [--resume auto|PATH] SECTION.KEY=VALUE...`` trains ``synthetic_pretrain`` with the
overrides through :func:`albef.workflows.train.train` and writes ``OUT/rank{r}.pt`` with the model state and the local (this
rank's) momentum features of every step, captured where they are handed to the queue.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

import albef.tasks.contrastive as contrastive
from albef.config import load_config
from albef.engine.distributed import cleanup
from albef.workflows.train import train

_local: dict[str, list[torch.Tensor]] = {"image": [], "text": []}
_enqueue = contrastive.enqueue_gathered


def _recording_enqueue(model: Any, image_m: Any, text_m: Any, idx: Any = None) -> None:
    _local["image"].append(image_m.feat.detach().clone())
    _local["text"].append(text_m.feat.detach().clone())
    _enqueue(model, image_m, text_m, idx)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    contrastive.enqueue_gathered = _recording_enqueue  # type: ignore[assignment]
    resume, overrides = (sys.argv[3], sys.argv[4:]) if sys.argv[2] == "--resume" else (None, sys.argv[2:])
    cfg = load_config("synthetic_pretrain", overrides)
    try:
        result, model, ctx = train(cfg, resume=resume, show_progress=False)
        payload = {
            "rank": ctx.world.rank,
            "world_size": ctx.world.world_size,
            "global_step": result.state.global_step,
            "model": model.state_dict(),
            "local_image_m": _local["image"],
            "local_text_m": _local["text"],
        }
        torch.save(payload, out / f"rank{ctx.world.rank}.pt")
    finally:
        cleanup()
