"""The task registry: tasks register by name; benchmarks and the command line look them up here."""

from __future__ import annotations

from .task import Task

__all__ = ["register_task", "get_task", "tasks"]

_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` under ``task.name`` (names are unique)."""
    if task.name in _TASKS:
        raise ValueError(f"a task named '{task.name}' is already registered")
    _TASKS[task.name] = task
    return task


def tasks() -> dict[str, Task]:
    """All registered tasks by name."""
    return dict(_TASKS)


def get_task(name: str | Task) -> Task:
    """The task called ``name`` (a :class:`Task` is returned as is)."""
    if isinstance(name, Task):
        return name
    try:
        return _TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task '{name}'; choose from {', '.join(sorted(_TASKS))}") from None
