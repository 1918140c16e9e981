"""Helper of ``test_distributed_eval``: evaluate the dev split of ``TASK`` (nlvr or ve) with a seeded random
tiny model, in one process or as one rank of ``torch.distributed.run``; rank 0 writes ``OUT``.

``_dist_classify.py OUT TASK SECTION.KEY=VALUE...``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from albef.config import load_config
from albef.engine.distributed import cleanup, init_distributed
from albef.engine.precision import resolve_precision
from albef.models import create_model
from albef.tasks import get_task
from albef.tasks.data import build_tokenizer

if __name__ == "__main__":
    out, task_name, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    world = init_distributed("cpu")
    cfg = load_config(f"synthetic_{task_name}", overrides)
    torch.manual_seed(0)
    model = create_model(cfg.task, cfg.model).eval()
    task = get_task(cfg.task)(cfg, build_tokenizer(cfg.data))
    evaluator = task.evaluator("dev", resolve_precision("fp32", torch.device("cpu")))
    result = evaluator.run(model)
    local = len(evaluator.loader.dataset)  # the examples this rank scored
    if world.is_main:
        torch.save({"values": result.values(), "outputs": result.outputs, "local": local}, out)
    cleanup()
