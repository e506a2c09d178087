"""Cross-field checks that one section alone cannot make."""

from __future__ import annotations

from peft_ray.errors import SpecError
from peft_ray.spec.schema import JobSpec
from peft_ray.templates import Template


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
