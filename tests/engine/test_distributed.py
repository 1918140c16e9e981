"""Distributed helpers: inert in one process; a real 2-process gloo pretraining run on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from albef.engine import checkpointing as ckpt
from albef.engine import distributed
from albef.engine.distributed import World, all_gather_cat, all_reduce_sum, barrier, init_distributed
from tests.engine import TINY_OVERRIDES, small_world

REPO_ROOT = Path(__file__).resolve().parents[2]
RANK_HELPER = Path(__file__).with_name("_dist_rank.py")
BATCH = 8  # data.batch_size_train of TINY_OVERRIDES


def test_world_defaults_to_one_process() -> None:
    world = World()
    assert (world.rank, world.world_size, world.local_rank) == (0, 1, 0)
    assert world.is_main and not world.distributed
    assert not World(rank=1, world_size=2).is_main
    assert World(rank=0, world_size=2).distributed


def test_init_without_torchrun_environment_is_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed("cpu") == World()
    assert not dist.is_initialized()


def test_init_with_a_world_of_one_starts_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert init_distributed("cpu") == World(0, 1, 0)
    assert not dist.is_initialized()


def test_collectives_are_no_ops_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a collective was called in a single process")

    for name in ("all_gather", "all_gather_object", "all_reduce", "barrier"):
        monkeypatch.setattr(distributed.dist, name, forbidden)
    assert not distributed.is_distributed()
    x = torch.arange(6.0).view(3, 2)
    assert all_gather_cat(x) is x
    y = torch.ones(4)
    assert all_reduce_sum(y) is y and torch.equal(y, torch.ones(4))
    assert barrier() is None
    state = {"torch": torch.get_rng_state()}
    assert distributed.all_gather_object(state) == [state]
    distributed.cleanup()  # nothing to destroy


def test_collectives_call_torch_distributed_when_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a (faked) 3-rank group the helpers gather, sum and wait through ``torch.distributed``."""
    calls: list[str] = []

    def fake_all_gather(parts: list[torch.Tensor], tensor: torch.Tensor) -> None:
        calls.append("all_gather")
        for rank, part in enumerate(parts):
            part.copy_(tensor + 10 * rank)

    def fake_all_reduce(tensor: torch.Tensor, op: object = None) -> None:
        calls.append("all_reduce")
        tensor.mul_(3)

    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(distributed.dist, "all_gather", fake_all_gather)
    monkeypatch.setattr(distributed.dist, "all_reduce", fake_all_reduce)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    x = torch.tensor([[1.0, 2.0]])
    gathered = all_gather_cat(x)
    assert torch.equal(gathered, torch.tensor([[1.0, 2.0], [11.0, 12.0], [21.0, 22.0]]))
    assert torch.equal(all_reduce_sum(torch.ones(2)), torch.full((2,), 3.0))
    barrier()
    assert calls == ["all_gather", "all_reduce", "barrier"]


def _launch_two_ranks(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def _two_rank_training(
    out: Path, world: Path, *settings: str, resume: str | None = None
) -> list[dict[str, Any]]:
    """Pretrain on two gloo ranks (CPU) with ``settings`` overrides; each rank's dump of ``_dist_rank.py``."""
    overrides = [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, "data.test_file=null"]
    resume_args = ["--resume", resume] if resume else []
    proc = _launch_two_ranks(
        [str(RANK_HELPER), str(out), *resume_args, *overrides, *settings, f"runtime.output_dir={out}"]
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return [torch.load(out / f"rank{r}.pt", map_location="cpu", weights_only=True) for r in (0, 1)]


Run = tuple[Path, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Two pretraining steps on two ranks, 8 samples per rank and step (queue of 32)."""
    out = tmp_path_factory.mktemp("ddp")
    return out, _two_rank_training(out, small_world(tmp_path_factory), "optim.max_steps=2")


def test_every_rank_holds_identical_state_after_the_steps(two_rank_run: Run) -> None:
    _, (rank0, rank1) = two_rank_run
    assert (rank0["rank"], rank1["rank"]) == (0, 1)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["global_step"] == rank1["global_step"] == 2
    m0, m1 = rank0["model"], rank1["model"]
    assert m0.keys() == m1.keys()
    assert [k for k in m0 if not torch.equal(m0[k], m1[k])] == []


def test_the_queue_receives_the_global_batch(two_rank_run: Run) -> None:
    _, (rank0, rank1) = two_rank_run
    model = rank0["model"]
    image_queue, text_queue = model["queue.image_queue"], model["queue.text_queue"]
    # Two steps of 2 x 8 columns fill the 32-column queue: the pointer is back at 0 (it would be at 16 if
    # each rank enqueued only its own 8).
    assert int(model["queue.queue_ptr"]) == (2 * 2 * BATCH) % 32 == 0
    # Columns: [rank 0 step 1 | rank 1 step 1 | rank 0 step 2 | rank 1 step 2].
    for step in range(2):
        for rank, local in enumerate((rank0, rank1)):
            start = (2 * step + rank) * BATCH
            image_m, text_m = local["local_image_m"][step], local["local_text_m"][step]
            assert image_m.shape == text_m.shape == (BATCH, 16)
            assert torch.equal(image_queue[:, start : start + BATCH], image_m.T)
            assert torch.equal(text_queue[:, start : start + BATCH], text_m.T)
    assert not torch.equal(rank0["local_text_m"][0], rank1["local_text_m"][0])  # different shards


def test_only_rank_zero_writes(two_rank_run: Run) -> None:
    out, (rank0, _) = two_rank_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["samples_per_s"] == pytest.approx(2 * BATCH / records[0]["step_time"])  # global batch
    saved = ckpt.load_training_checkpoint(out / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(2))
    assert saved["state"]["global_step"] == 2
    assert all(torch.equal(v, rank0["model"][k]) for k, v in saved["model"].items())
    assert len(saved["rng_per_rank"]) == 2  # each rank's RNG state, for an exact resume
    assert not torch.equal(saved["rng_per_rank"][0]["torch"], saved["rng_per_rank"][1]["torch"])


@pytest.mark.slow
def test_two_rank_resume_is_bit_identical(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Stop at step 2 (mid-epoch: 3 steps an epoch per rank), resume to 4: the state of 4 steps in one go.

    The warm-up spans every step, so the lr does not depend on ``optim.max_steps``. Every rank must get its
    own RNG state back (the masks and negatives it draws), not rank 0's.
    """
    world = small_world(tmp_path_factory)
    common = ("optim.warmup_steps=100", "runtime.checkpoint_every=1")
    straight = _two_rank_training(tmp_path_factory.mktemp("straight"), world, *common, "optim.max_steps=4")
    out = tmp_path_factory.mktemp("stopped")
    _two_rank_training(out, world, *common, "optim.max_steps=2")
    resumed = _two_rank_training(out, world, *common, "optim.max_steps=4", resume="auto")
    for rank in (0, 1):
        assert resumed[rank]["global_step"] == straight[rank]["global_step"] == 4
        expected, got = straight[rank]["model"], resumed[rank]["model"]
        assert [k for k in expected if not torch.equal(expected[k], got[k])] == [], f"rank {rank}"


@pytest.mark.slow
def test_sigterm_to_two_ranks_stops_both_at_the_same_step_with_one_checkpoint(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """torchrun forwards SIGTERM to every rank; the ranks agree on the step (an all-reduce) and the checkpoint
    (a collective), so the job ends instead of hanging, and ``--resume auto`` continues it."""
    import signal
    import time

    world, out = small_world(tmp_path_factory), tmp_path_factory.mktemp("signalled")
    ready = out / "ready"
    argv = ["pretrain", "--output-dir", str(out / "run"), "--no-progress", "--max-steps", "9"]
    for value in (f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, "data.test_file=null"):
        argv += ["--set", value]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "ALBEF_TEST_PAUSE": "0.3"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    helper = Path(__file__).with_name("_pretrain_hang.py")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.Popen(
        [*launcher, str(helper), "3", str(ready), *argv],
        cwd=REPO_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the job never reached step 4"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0, "a stopped job reports it"
    assert "stopped by SIGTERM after step" in stderr, stderr[-3000:]
    steps = [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(out / "run" / ckpt.CHECKPOINT_DIR)]
    assert steps and 4 <= steps[-1] < 9
    env.pop("ALBEF_TEST_PAUSE")
    resumed = subprocess.run(
        [*launcher, "-m", "albef", *argv, "--resume", "auto"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ckpt.list_checkpoints(out / "run" / ckpt.CHECKPOINT_DIR)[-1].name == ckpt.checkpoint_name(9)


# -- SLURM ---------------------------------------------------------------------------------------------------
def test_slurm_node_lists_expand_as_scontrol_does() -> None:
    assert distributed.expand_nodelist("gpu[01-03,07],login") == ["gpu01", "gpu02", "gpu03", "gpu07", "login"]
    assert distributed.expand_nodelist("node7") == ["node7"]
    assert distributed.expand_nodelist("a[8-10]") == ["a8", "a9", "a10"]


def test_the_launch_environment_prefers_torchrun_then_slurm() -> None:
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456"}
    slurm["SLURM_JOB_NODELIST"] = "gpu[04-05]"
    assert distributed.launch_environment(slurm) == {
        "RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu04", "MASTER_PORT": "23456",
    }  # fmt: skip
    torchrun = {**slurm, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}  # srun torchrun ...: torchrun's
    assert distributed.launch_environment(torchrun) == {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    assert distributed.launch_environment({"PATH": "/bin"}) is None


SLURM_RANK = """
import sys, torch
from albef.engine.distributed import all_reduce_sum, cleanup, init_distributed
world = init_distributed("cpu")
total = all_reduce_sum(torch.tensor([float(world.rank + 1)]))
print(world.rank, world.world_size, world.local_rank, int(total.item()))
cleanup()
"""


def test_two_processes_started_as_srun_would_form_one_group(tmp_path: Path) -> None:
    """No torchrun: only SLURM's variables, as ``srun --ntasks=2`` sets them on one node."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "MASTER_"))
    }
    env.pop("LOCAL_RANK", None)
    env.update(
        PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", SLURM_NTASKS="2", SLURM_JOB_NODELIST="localhost"
    )
    env["SLURM_JOB_ID"] = str(os.getpid())  # the port follows the job id
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SLURM_RANK],
            env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in outputs]
    assert [out.split() for out, _ in outputs] == [["0", "2", "0", "3"], ["1", "2", "1", "3"]]
