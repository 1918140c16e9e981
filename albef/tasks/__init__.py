"""Training tasks: data + objective per ``ExperimentConfig.task``, registered in :data:`TASKS`."""

from albef.tasks.base import TASKS, Option, Task

__all__ = ["TASKS", "TASK_MODULES", "Option", "Task", "all_tasks", "get_task"]

TASK_MODULES = (
    "albef.tasks.pretrain",
    "albef.tasks.text_assignment",
    "albef.tasks.retrieval",
    "albef.tasks.vqa",
    "albef.tasks.nlvr",
    "albef.tasks.grounding",
    "albef.tasks.compositional",
)
"""Modules whose import registers their tasks in :data:`TASKS`."""


def all_tasks() -> list[tuple[str, type[Task]]]:
    """Every registered task, by name (importing the task modules registers them)."""
    import importlib

    for module in TASK_MODULES:
        importlib.import_module(module)
    return [(name, TASKS.get(name)) for name in TASKS.names()]  # type: ignore[misc]


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``."""
    all_tasks()
    return TASKS.get(name)  # type: ignore[return-value]
