"""Cross-field checks that one section alone cannot make."""

from __future__ import annotations

from typing import List

from peft_ray.errors import SpecError
from peft_ray.spec.schema import JobSpec
from peft_ray.templates import Template, normalize_verbalizer


def check_cross_fields(spec: JobSpec, task) -> None:
    """The checks of every job, then the task's own (`task`: its registered Task)."""
    template = Template.parse(spec.template.text)
    _check_soft_tokens(spec, template)
    if spec.data.train_shots and not task.few_shot:
        raise SpecError(f"data.train_shots: K rows per class needs classes; task.type is '{spec.task.type}' "
                        "(for a smaller training set there, use train.max_steps)")
    task.check(spec, template)


def _check_soft_tokens(spec: JobSpec, template: Template) -> None:
    n = template.soft_tokens
    have = getattr(spec.method, "num_virtual_tokens", None)
    if n is not None and have is not None and n != have:
        raise SpecError(
            f"template.text says {{soft:{n}}} but method.num_virtual_tokens is {have}; "
            "make them agree (or write plain {soft})")


def check_verbalizer(verbalizer, labels: List[str], head: str) -> None:
    """template.verbalizer against the task's labels (a task's check calls it with its own)."""
    verb = normalize_verbalizer(verbalizer)
    if verb is None:
        if head == "verbalizer":
            raise SpecError("template.verbalizer: task.head is 'verbalizer' but no verbalizer is given")
        return
    missing = [lab for lab in labels if lab not in verb]
    if missing:
        raise SpecError(f"template.verbalizer: label(s) {missing} from task.labels have no words; "
                        f"add e.g. '{missing[0]}: [word]'")
    extra = [k for k in verb if labels and k not in labels]
    if extra:
        raise SpecError(f"template.verbalizer: key(s) {extra} are not in task.labels {labels}")
    empty = [k for k, words in verb.items() if not words or not all(w.strip() for w in words)]
    if empty:
        raise SpecError(f"template.verbalizer: label(s) {empty} have an empty word list")
