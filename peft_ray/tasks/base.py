"""The task registry. A task decides how rows become tensors, what the loss is,
how evaluation scores, and which base-model head to load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict

from peft_ray.registry import Registry


@dataclass(frozen=True)
class TaskImpl:
    name: str
    # (spec, model_path) -> base model with the right head, seeded
    load_base: Callable[..., Any]
    # (arrow table, PreprocessConfig) -> arrow table of model-ready rows (Ray Data map_batches)
    preprocess: Callable[..., Any]
    # (engine, micro-batch) -> scalar loss
    loss: Callable[..., Any]
    # (engine, tables, spec, pad_id) -> metrics dict, identical on every rank
    evaluate: Callable[..., Dict[str, float]]
    primary_metric: str = "accuracy"


TASKS: Registry[TaskImpl] = Registry("task", "task.type")


def get_task(name: str) -> TaskImpl:
    import peft_ray.tasks.classification  # noqa: F401  (registers itself)

    return TASKS.get(name)
