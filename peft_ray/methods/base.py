"""The method registry and the interface every PEFT method implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Type


from peft_ray.config_model import ConfigModel
from peft_ray.registry import Registry


class MethodConfig(ConfigModel):
    """Base of every method's config: unknown keys are errors, values are validated (ConfigModel)."""

    name: str

    def input_positions(self) -> int:
        """Positions of the model's input the method's soft tokens take (prompt tuning, P-tuning):
        the pre-flight adds them to model.max_length against the model's position limit."""
        return 0

    def module_patterns(self) -> Dict[str, Any]:
        """The fields naming base modules (field -> names or a regex) that the pre-flight checks
        against the base, built on the meta device, before any run."""
        return {}


@dataclass(frozen=True)
class MethodSpec:
    """What the registry holds for one method."""

    name: str
    config_cls: Type[MethodConfig]
    build: Callable[..., Any]          # (base_model, cfg, ctx) -> torch.nn.Module
    peft_type: str                     # HF PEFT's PeftType value, e.g. "PROMPT_TUNING"
    peft_config: Callable[..., Dict[str, Any]]  # (model, cfg, base_path, task_type) -> adapter_config
    merge: Optional[Callable[[Any], Any]] = None  # model -> the base with the update folded in (None: can't)
    # why `export --merge` cannot fold this method in (where merge is None), for its error
    no_merge_why: str = "adds virtual tokens that no plain model can hold"


METHODS: Registry[MethodSpec] = Registry("PEFT method", "method.name", group="peft_ray.methods")


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)

