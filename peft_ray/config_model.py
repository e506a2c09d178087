"""The base of every config a job file fills: the spec's sections, a method's and a task's fields.

YAML reads `true`, `yes` and `on` as booleans, and pydantic's lax mode turns a boolean into 1
for a number field: `train.lr=true` trained at a learning rate of 1.0 and `train.epochs=yes` for
one epoch, without a word. A boolean is refused wherever a number is asked for, and `null` where
the field has no "none" meaning names the default the user can get by leaving the key out.
"""

from __future__ import annotations

import types
import typing
from typing import Any, List, Optional

import pydantic
from pydantic import model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError


def _members(annotation: Any) -> tuple:
    """The types a field's annotation admits, Optional and Union opened (Literal kept whole)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(m for arg in typing.get_args(annotation) for m in _members(arg))
    return (annotation,)


def _takes(annotation: Any, value: Any) -> bool:
    """Whether the annotation names a type for this kind of value itself (not by lax coercion)."""
    for member in _members(annotation):
        if member is Any or member is type(value):
            return True
        if typing.get_origin(member) is typing.Literal and any(type(a) is type(value) for a in typing.get_args(member)):
            return True
    return False


def _numeric(annotation: Any) -> bool:
    """int or float, or a Literal of numbers (`zero_stage: Literal[1, 2, 3]`, where True == 1)."""
    return any(m in (int, float) or (typing.get_origin(m) is typing.Literal and any(
        isinstance(a, (int, float)) and not isinstance(a, bool) for a in typing.get_args(m)))
        for m in _members(annotation))


def _numbers_list(annotation: Any) -> bool:
    """A list of numbers only (`tune.space`'s `uniform: [low, high]`; not `choice`, whose values may
    be booleans too)."""
    for m in _members(annotation):
        item = (typing.get_args(m) or (Any,))[0]
        if typing.get_origin(m) in (list, List) and _numeric(item) and not _takes(item, True):
            return True
    return False


def _text_list(annotation: Any) -> bool:
    """A list of strings (`task.labels`), whose items YAML may have read as booleans (`[yes, no]`)."""
    return any(typing.get_origin(m) in (list, List) and (typing.get_args(m) or (None,))[0] is str
               for m in _members(annotation))


def _fault(field: pydantic.fields.FieldInfo, value: Any) -> Optional[str]:
    """What is wrong with a raw YAML value for this field that pydantic's lax mode would let pass
    (a boolean made 1) or name only by its type (a null), or None."""
    if isinstance(value, bool) and _numeric(field.annotation) and not _takes(field.annotation, value):
        return (f"needs a number, got {str(value).lower()}, which YAML reads as a boolean (as true/false, "
                "yes/no and on/off); give a number")
    if (isinstance(value, list) and _numbers_list(field.annotation)
            and any(isinstance(v, bool) for v in value)):
        shown = ", ".join(str(v).lower() if isinstance(v, bool) else repr(v) for v in value)
        return f"needs numbers, got [{shown}], where YAML reads true/false (yes/no, on/off) as booleans; give numbers"
    if _text_list(field.annotation) and isinstance(value, list) and any(isinstance(v, bool) for v in value):
        shown = ", ".join(str(v).lower() if isinstance(v, bool) else repr(v) for v in value)
        return (f"needs text, got [{shown}], where YAML reads yes/no, true/false and on/off as booleans; quote "
                "them, e.g. ['yes', 'no']")
    if value is None and not _takes(field.annotation, value) and not field.is_required():
        return (f"got null, which this key cannot be; give a value, or leave the key out for its default "
                f"({field.get_default(call_default_factory=True)!r})")
    return None


def _is_section(field: Optional[pydantic.fields.FieldInfo]) -> bool:
    """A required sub-section (`train:`): given empty in YAML (every line under it commented out),
    it reads as null, which means its defaults, not an error."""
    return (field is not None and isinstance(field.annotation, type)
            and issubclass(field.annotation, pydantic.BaseModel))


class ConfigModel(pydantic.BaseModel):
    """Unknown keys are errors, values are validated, inf/nan are refused (`epochs: .inf` would
    overflow the step count later), and booleans never stand in for numbers."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # A model validator, not a field validator for "*": pydantic refuses a before-validator on the
    # discriminator fields (method.name, task.type) of the schema's unions. Raising a ValidationError
    # with each field's location keeps the errors as exact as a field validator's.
    @model_validator(mode="before")
    @classmethod
    def _raw_values(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k: {} if v is None and _is_section(cls.model_fields.get(k)) else v for k, v in data.items()}
        faults = [(name, data[name], _fault(field, data[name])) for name, field in cls.model_fields.items()
                  if name in data]
        details = [InitErrorDetails(type=PydanticCustomError("config_value", "{message}", {"message": fault}),
                                    loc=(name,), input=value) for name, value, fault in faults if fault]
        if details:
            raise ValidationError.from_exception_data(cls.__name__, details)
        return data
