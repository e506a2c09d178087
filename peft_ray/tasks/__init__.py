"""Tasks: one folder each behind the Task protocol (tasks/base.py), registered in TASKS.

Importing this package registers the built-in tasks (explicit, not a side effect of importing
peft_ray itself); a new task is a folder plus one line here, or a `register(...)` call of its own.
"""

from __future__ import annotations

from peft_ray.tasks.base import TASKS, Task, TaskConfig, register

from peft_ray.tasks import classification, generation, token_classification  # noqa: F401,E402


def get_task(name: str) -> Task:
    return TASKS.get(name)


__all__ = ["TASKS", "Task", "TaskConfig", "get_task", "register"]
