"""`task: {type: classification}` fields."""

from __future__ import annotations

from typing import Dict, List, Literal, Optional, Tuple, Union

from pydantic import Field, field_validator

from peft_ray.errors import SpecError
from peft_ray.tasks.base import TaskConfig
from peft_ray.templates import normalize_verbalizer


class ClassificationConfig(TaskConfig):
    type: Literal["classification"] = "classification"
    labels: Optional[List[str]] = Field(None, description="label names in label-id order")
    label_column: str = Field("label", description="column holding the label (int id or label name)")
    head: Literal["auto", "head", "verbalizer"] = Field(
        "auto", description="classification by a trained head or by verbalizer scoring "
        "(auto: head for encoders, verbalizer for causal LMs)")

    @field_validator("labels", mode="before")
    @classmethod
    def _integer_names(cls, v):
        """`labels: [0, 1, ...]` (a 0/1 data set's names) or `[1, 2, 3, 4, 5]` (star ratings) are the
        names "0", "1", ...: where a label name is a number, numbers in the data are read as names,
        never as ids (rows/labels.py), so a value has one meaning however a file stores it."""
        if isinstance(v, list) and any(isinstance(x, int) and not isinstance(x, bool) for x in v):
            if any(isinstance(x, int) and not isinstance(x, bool) and x < 0 for x in v):
                raise ValueError(f"integer labels must not be negative (got {v}); quote them as text, "
                                 "e.g. ['-1', '1'], to use them as names")
            return [str(x) for x in v]
        return v

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v):
        return unique_labels(v)


def unique_labels(v):
    if v is not None:
        if len(v) < 1:
            raise ValueError("needs at least 1 label")
        if len(set(v)) != len(v):
            raise ValueError(f"labels must be unique, got {v}")
    return v


def scoring_for(head: str, kind: str) -> str:
    """head (a trained classifier) or verbalizer scoring by the LM head: mlm or causal.
    `kind` is models.lm_kind of the base: encoder, causal or seq2seq."""
    if head == "auto":
        head = "verbalizer" if kind == "causal" else "head"
    if head == "head":
        return "head"
    if kind == "seq2seq":
        raise SpecError("task.head: verbalizer scoring supports masked LMs (BERT family) and causal LMs "
                        "(GPT-2, Llama); for T5 use task.head: head or a generation task")
    return "causal" if kind == "causal" else "mlm"


def verbalizer_words(labels: Optional[List[str]], verbalizer: Optional[Dict[str, Union[str, List[str]]]]
                     ) -> Tuple[Tuple[str, ...], ...]:
    """The label words per label in task.labels order (a label's own name without a verbalizer)."""
    labels = tuple(labels or ())
    verb = normalize_verbalizer(verbalizer) or {lab: [lab] for lab in labels}
    return tuple(tuple(verb.get(lab, [lab])) for lab in labels)
