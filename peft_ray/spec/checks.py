"""Cross-field checks that one section alone cannot make."""

from __future__ import annotations

from peft_ray.errors import SpecError
from peft_ray.spec.schema import JobSpec
from peft_ray.templates import Template, normalize_verbalizer


def check_cross_fields(spec: JobSpec) -> None:
    template = Template.parse(spec.template.text)
    _check_soft_tokens(spec, template)
    _check_verbalizer(spec)
    if spec.data.train_shots and spec.task.type != "classification":
        raise SpecError(f"data.train_shots: K rows per class needs classes; task.type is '{spec.task.type}' "
                        "(for a smaller training set there, use train.max_steps)")
    if spec.task.type == "classification":
        if not spec.task.labels or len(spec.task.labels) < 2:
            raise SpecError("task.labels: classification needs at least two label names, e.g. [negative, positive]")
        if sum(p.kind == "label" for p in template.parts) > 1:
            raise SpecError("template.text: {label} marks the one position that is scored; use it once "
                            f"(got '{spec.template.text}')")
    elif spec.task.type == "token_classification":
        _check_token_classification(spec, template)
    else:
        _check_text_to_text(spec, template)


def _check_token_classification(spec: JobSpec, template: Template) -> None:
    if not spec.task.labels:
        raise SpecError("task.labels: token_classification needs the entity types, e.g. [PER, ORG, LOC, MISC] "
                        "(tags are IOB2: O, B-PER, I-PER, ...)")
    bad = [lab for lab in spec.task.labels if lab[:2] in ("B-", "I-") or lab == "O"]
    if bad:
        raise SpecError(f"task.labels: give entity types, not IOB2 tags ({bad}); e.g. [PER, ORG] for B-PER/I-PER/...")
    if template.columns != [spec.task.tokens_column] or template.has_label_slot:
        raise SpecError(f"template.text: token_classification templates hold exactly one column, the word list "
                        f"task.tokens_column ('{{{spec.task.tokens_column}}}'), plus optional soft tokens and hard "
                        f"text; got columns {template.columns}")


def _check_text_to_text(spec: JobSpec, template: Template) -> None:
    """generation / translation: the response goes at {label} (or after the template when it has none)."""
    labels = [i for i, p in enumerate(template.parts) if p.kind == "label"]
    if len(labels) > 1:
        raise SpecError("template.text: {label} marks where the response starts; use it once")
    if labels and any(p.kind != "text" or p.value.strip() for p in template.parts[labels[0] + 1:]):
        raise SpecError("template.text: nothing may follow {label} in a generation/translation template: "
                        "the response is the end of the sequence")
    if spec.task.target_column in template.columns:
        raise SpecError(f"template.text: the response column '{spec.task.target_column}' (task.target_column) "
                        "must not appear in the prompt; mark where it goes with {label}")


def _check_soft_tokens(spec: JobSpec, template: Template) -> None:
    n = template.soft_tokens
    have = getattr(spec.method, "num_virtual_tokens", None)
    if n is not None and have is not None and n != have:
        raise SpecError(
            f"template.text says {{soft:{n}}} but method.num_virtual_tokens is {have}; "
            "make them agree (or write plain {soft})")


def _check_verbalizer(spec: JobSpec) -> None:
    verb = normalize_verbalizer(spec.template.verbalizer)
    labels = spec.task.labels or []
    if verb is None:
        if spec.task.head == "verbalizer":
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
