"""Training tasks: data + objective per ``ExperimentConfig.task``, registered in :data:`TASKS`."""

from albef.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task", "get_task"]


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name`` (importing the task modules registers them)."""
    import albef.tasks.pretrain  # noqa: F401

    return TASKS.get(name)  # type: ignore[return-value]
