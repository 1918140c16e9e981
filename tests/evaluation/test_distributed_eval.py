"""NLVR² and SNLI-VE evaluation (and so their per-epoch validation) sharded over two gloo ranks: each rank
scores its own block of the split, and the gathered result equals one process's, no example twice or lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine import TINY_OVERRIDES, small_world

REPO_ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("_dist_classify.py")


def _run(out: Path, task: str, world: Path, ranks: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    )
    overrides = [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, "data.batch_size_test=4"]
    command = [sys.executable, *launcher, str(HELPER), str(out), task, *overrides]
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("task", ["nlvr", "ve"])
def test_two_ranks_give_the_single_process_result(
    task: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    world = small_world(tmp_path_factory)
    out = tmp_path_factory.mktemp(f"dist-{task}")
    single = _run(out / "one.pt", task, world, 1)
    sharded = _run(out / "two.pt", task, world, 2)
    assert sharded["values"] == single["values"]
    for key, value in single["outputs"].items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(sharded["outputs"][key], value, rtol=0, atol=1e-5)
        else:
            assert sharded["outputs"][key] == value, key
    total = len(single["outputs"]["predictions" if task == "nlvr" else "classes"])
    assert single["local"] == total and 0 < sharded["local"] < total  # rank 0 scored only its block
