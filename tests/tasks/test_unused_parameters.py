"""DDP's ``find_unused_parameters`` only where a task has trainable parameters outside its loss: one training
step of every task, and the parameters left without a gradient."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from albef.config import load_config
from albef.data.loaders import build_loader
from albef.tasks import get_task
from albef.tasks.data import build_tokenizer
from tests.engine import TINY_OVERRIDES, small_world

TASKS = ("pretrain", "retrieval", "vqa", "nlvr_pretrain", "nlvr", "ve")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


def without_gradient(task_name: str, world: Path) -> list[str]:
    cfg = load_config(
        f"synthetic_{task_name}", [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES]
    )
    task = get_task(cfg.task)(cfg, build_tokenizer(cfg.data))
    torch.manual_seed(0)
    model = task.build_model().train()
    loader = build_loader(task.train_dataset(), cfg.data.batch_size_train, task.collator(), train=True)
    batch = next(iter(loader))
    losses = task.objective()(model, batch, 0.4)
    sum(v for k, v in losses.items() if k.endswith("_loss")).backward()  # type: ignore[union-attr]
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("task_name", TASKS)
def test_ddp_looks_for_unused_parameters_exactly_where_there_are_some(task_name: str, world: Path) -> None:
    unused = without_gradient(task_name, world)
    assert get_task(task_name).unused_parameters == bool(unused), unused
