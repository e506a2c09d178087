"""Row builders: each task's tokenization, run inside Ray Data `map_batches` tasks.

Nothing under rows/ imports torch itself: a Ray Data task only needs tokenizers, and
`row_builder(task_type, scoring)` picks the builder without importing the task modules
(models, losses, metrics). Concurrent first imports are serialized by the caller,
peft_ray.data.preprocess.preprocess.
"""

from __future__ import annotations

from typing import Callable


def row_builder(task_type: str, scoring: str = "head") -> Callable:
    if task_type == "classification":
        if scoring == "head":
            from peft_ray.data.preprocess import preprocess_batch

            return preprocess_batch
        from peft_ray.tasks.rows.verbalizer import preprocess
        return preprocess
    if task_type in ("generation", "translation"):
        from peft_ray.tasks.rows.text_to_text import preprocess
        return preprocess
    if task_type == "token_classification":
        from peft_ray.tasks.rows.token_classification import preprocess
        return preprocess
    raise ValueError(f"task.type: no row builder for '{task_type}'")
