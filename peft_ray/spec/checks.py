"""Cross-field checks that one section alone cannot make."""

from __future__ import annotations

import functools
import sys

from peft_ray.errors import SpecError
from peft_ray.spec.schema import JobSpec
from peft_ray.templates import Template


def check_cross_fields(spec: JobSpec, task) -> None:
    """The checks of every job, then the task's own (`task`: its registered Task)."""
    template = Template.parse(spec.template.text)
    _check_soft_tokens(spec, template)
    _check_validation(spec)
    if spec.data.train_shots and not task.few_shot:
        raise SpecError(f"data.train_shots: K rows per class needs classes; task.type is '{spec.task.type}' "
                        "(for a smaller training set there, use train.max_steps)")
    task.check(spec, template)


def _check_soft_tokens(spec: JobSpec, template: Template) -> None:
    n = template.soft_tokens
    have = getattr(spec.method, "num_virtual_tokens", None)
    if any(p.kind == "soft" for p in template.parts) and not hasattr(spec.method, "num_virtual_tokens"):
        _note_unread_soft(spec.method.name)
    if n is not None and have is not None and n != have:
        raise SpecError(
            f"template.text says {{soft:{n}}} but method.num_virtual_tokens is {have}; "
            "make them agree (or write plain {soft})")


@functools.lru_cache(maxsize=None)    # once a process, as a search's trials come to it again
def _note_unread_soft(method: str) -> None:
    print(f"[peft-ray] note: template.text's {{soft}} is not read: {method} adds no virtual tokens, so it "
          "changes nothing (it marks where prompt tuning, P-tuning and prefix tuning put theirs)", file=sys.stderr)


def _check_validation(spec: JobSpec) -> None:
    """Settings that would be ignored without a word (a new-user review): a hold-out fraction beside
    a validation file, and early stopping with nothing to evaluate."""
    data = spec.data
    if data.validation is not None and data.validation_fraction > 0:
        raise SpecError(f"data.validation_fraction: {data.validation_fraction:g} holds out training rows only "
                        f"where data.validation is null, and this job names '{data.validation}'; set "
                        "data.validation: null to hold rows out, or drop data.validation_fraction")
    if spec.train.early_stopping_patience and data.validation is None and not data.holds_out:
        raise SpecError("train.early_stopping_patience: nothing is evaluated (data.validation is null and no "
                        "data.validation_fraction), so it would never stop early; name a validation file, "
                        "hold rows out, or drop it")
