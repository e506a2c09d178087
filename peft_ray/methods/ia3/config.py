"""IA3 config. Field names and defaults are HF PEFT's IA3Config."""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from peft_ray.methods.base import MethodConfig
from peft_ray.storage import PathStr
from peft_ray.methods.targets import check_targets


class IA3Config(MethodConfig):
    name: Literal["ia3"] = "ia3"
    target_modules: Optional[Union[List[str], str]] = Field(
        None, description="linear layers to rescale: a list of names (suffix match; each must match a "
        "layer) or a regex over whole module paths; null: the family default "
        "(BERT key/value/output.dense, GPT-2 c_attn/mlp.c_proj, Llama k_proj/v_proj/down_proj, T5 k/v/wo)")
    feedforward_modules: Optional[Union[List[str], str]] = Field(
        None, description="targets whose INPUT is scaled (the rest scale their output); names (suffix match) "
        "or a regex; null: the family default")
    modules_to_save: Optional[List[str]] = Field(
        None, description="extra base modules to train and save in full (the head is added for classification)")
    init_from: Optional[PathStr] = Field(None, description="an HF PEFT IA3 adapter folder to start from")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v):
        return check_targets(v)

    def module_patterns(self) -> Dict[str, Any]:
        # a listed feedforward_modules is checked against target_modules by the validator below
        ff = self.feedforward_modules
        return {"method.target_modules": self.target_modules,
                **({"method.feedforward_modules": ff} if isinstance(ff, str) else {})}

    @field_validator("feedforward_modules")
    @classmethod
    def _feedforward(cls, v):
        return check_targets(v) if isinstance(v, str) else v     # [] is PEFT's "none"

    @model_validator(mode="after")
    def _ff_within_targets(self):
        # PEFT's rule: with both given as lists, every feedforward module must be a target.
        if isinstance(self.target_modules, list) and isinstance(self.feedforward_modules, list):
            extra = [m for m in self.feedforward_modules if m not in self.target_modules]
            if extra:
                raise ValueError(f"method.feedforward_modules {extra} must also be in method.target_modules "
                                 f"{self.target_modules}")
        if self.feedforward_modules is not None and self.target_modules is None:
            raise ValueError("method.feedforward_modules needs method.target_modules too (the defaults come as a pair)")
        return self
