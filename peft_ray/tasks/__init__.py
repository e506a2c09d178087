"""Tasks: classification (and, as they land, generation, NER, translation)."""

from peft_ray.tasks.base import TASKS, TaskImpl, get_task

__all__ = ["TASKS", "TaskImpl", "get_task"]
