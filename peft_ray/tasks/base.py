"""The task registry. A task decides which base-model head to load, what the loss is, how
evaluation scores and what `predict` writes. How its rows are tokenized lives in
tasks/rows/ (torch-free, run inside Ray Data tasks; dispatched by rows.row_builder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from peft_ray.registry import Registry


@dataclass(frozen=True)
class TaskImpl:
    name: str
    # (spec, model_path) -> base model with the right head, seeded
    load_base: Callable[..., Any]
    # (engine, micro-batch, spec) -> scalar loss
    loss: Callable[..., Any]
    # (engine, tables, spec, pad_id) -> metrics dict, identical on every rank
    evaluate: Callable[..., Dict[str, float]]
    primary_metric: str = "accuracy"
    headline: tuple = ("accuracy", "macro_f1")   # metrics the progress log and summary show first
    # (model, batch, spec, tokenizer) -> {column: values}: `peft-ray predict` output columns
    predict: Optional[Callable[..., Dict[str, list]]] = None


TASKS: Registry[TaskImpl] = Registry("task", "task.type")


def get_task(name: str) -> TaskImpl:
    import peft_ray.tasks.classification  # noqa: F401  (each module registers itself)
    import peft_ray.tasks.text_to_text  # noqa: F401
    import peft_ray.tasks.token_classification  # noqa: F401

    return TASKS.get(name)
