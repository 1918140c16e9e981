"""WebDataset shards as a training source: the same records and images as the JSON list, training on them
bit-identical to training on the list, exact resume after SIGKILL, and every sample once per epoch over
2 ranks x 2 workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from albef.cli.main import main
from albef.data.datasets import PretrainDataset
from albef.data.formats import read_pretrain
from albef.data.loaders import build_loader, set_epoch
from albef.data.shards import ShardMember, expand_shards
from albef.data.transforms import build_test_transform
from albef.engine import checkpointing as ckpt
from tests.engine import assert_identical, pretrain_argv, small_world
from tests.engine.test_trainer import RESUME_SETS, TIMING_KEYS, _kill_when_hanging

PER_SHARD = 10  # 48 pretraining images of the small world: 5 shards


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


@pytest.fixture(scope="module")
def spec(world: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("shards") / "pretrain"
    args = ["data", "shards", str(world / "pretrain.json"), "--image-root", str(world), "--out", str(out)]
    assert main([*args, "--maxcount", str(PER_SHARD)]) == 0
    return f"{out}/{{000000..000004}}.tar"


def _steps(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def test_shards_hold_the_records_and_the_image_bytes_of_the_list(world: Path, spec: str) -> None:
    assert [p.name for p in expand_shards(spec)] == [f"00000{i}.tar" for i in range(5)]
    listed, sharded = read_pretrain(world / "pretrain.json"), read_pretrain(spec)
    assert [r.captions for r in sharded] == [r.captions for r in listed]
    for a, b in zip(listed[:12], sharded[:12], strict=True):  # across the first shard boundary
        assert ShardMember.parse(b.image).open().read() == (world / a.image).read_bytes()


def test_pretraining_on_shards_is_bit_identical_to_the_json_list(
    world: Path, spec: str, tmp_path: Path
) -> None:
    json_run, shard_run = tmp_path / "json", tmp_path / "shards"
    assert main([*pretrain_argv(world, json_run, "data.test_file=null"), "--max-steps", "4"]) == 0
    sets = ("data.test_file=null", f'data.train_files=["{spec}"]')
    assert main([*pretrain_argv(world, shard_run, *sets), "--max-steps", "4"]) == 0
    assert _steps(shard_run) == _steps(json_run)  # every loss part of every step: it learns the same
    final = [
        ckpt.load_training_checkpoint(ckpt.list_checkpoints(r / "checkpoints")[-1])
        for r in (json_run, shard_run)
    ]
    assert_identical(final[1]["model"], final[0]["model"], "model")


def test_sigkill_then_resume_on_shards_is_bit_identical(world: Path, spec: str, tmp_path: Path) -> None:
    sets = (*RESUME_SETS, f'data.train_files=["{spec}"]')
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert main(pretrain_argv(world, reference, *sets)) == 0
    argv = pretrain_argv(world, run, *sets)
    _kill_when_hanging(argv, hang_at=5, tmp_path=tmp_path)  # killed mid-epoch, after step 4's checkpoint
    assert main([*argv, "--resume", "auto"]) == 0
    expected = ckpt.load_training_checkpoint(reference / "checkpoints" / "step-00000008.pt")
    got = ckpt.load_training_checkpoint(run / "checkpoints" / "step-00000008.pt")
    for part in ("model", "optimizer", "rng", "state"):
        assert_identical(got[part], expected[part], part)
    assert _steps(run) == _steps(reference)


class Keyed(PretrainDataset):
    """The sample's image reference (unique) and its decoded pixels' sum, read in the loader's worker."""

    def build(self, record: Any, index: int, rng: Any) -> tuple[str, float]:
        sample = super().build(record, index, rng)
        return record.image, float(sample.image.sum())


def test_two_ranks_of_two_workers_read_every_sample_once_an_epoch(world: Path, spec: str) -> None:
    records = read_pretrain(spec)
    dataset = Keyed(records, world, build_test_transform(48), source=spec)
    loaders = [
        build_loader(dataset, 4, list, train=True, num_workers=2, rank=r, world_size=2, seed=1)
        for r in (0, 1)
    ]
    per_epoch = []
    for epoch in range(2):
        read: list[str] = []
        for loader in loaders:
            set_epoch(loader, epoch)
            read += [key for batch in loader for key, _ in batch]
        assert sorted(read) == sorted(r.image for r in records)  # 48 = 6 steps x 2 ranks x 4: each once
        per_epoch.append(read)
    assert per_epoch[0] != per_epoch[1]  # reshuffled
    pixels = {key: value for key, value in (dataset[i] for i in range(len(dataset)))}
    reference = PretrainDataset(
        read_pretrain(world / "pretrain.json"), world, build_test_transform(48), source=""
    )
    for i in range(0, len(records), 7):
        assert pixels[records[i].image] == pytest.approx(float(reference[i].image.sum()))
