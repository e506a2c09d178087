"""LoRA config. Field names and defaults are HF PEFT's LoraConfig."""

from __future__ import annotations

from typing import List, Literal, Optional, Union

from pydantic import Field, field_validator

from peft_ray.methods.base import MethodConfig
from peft_ray.methods.targets import check_targets


class LoraConfig(MethodConfig):
    name: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, le=4096, description="rank of the update B A")
    lora_alpha: float = Field(8, gt=0, description="scale: the update is multiplied by lora_alpha / r")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input (0: fused kernel)")
    use_rslora: bool = Field(False, description="scale by lora_alpha / sqrt(r) (rank-stabilized LoRA)")
    target_modules: Optional[Union[List[str], str]] = Field(
        None, description="linear layers to adapt: names (suffix match) or a regex; null: the family default "
        "(BERT query/value, GPT-2 c_attn, Llama q_proj/v_proj, T5 q/v)")
    modules_to_save: Optional[List[str]] = Field(
        None, description="extra base modules to train and save in full (the head is added for classification)")
    init_from: Optional[str] = Field(None, description="an HF PEFT LoRA adapter folder to start from")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v):
        return check_targets(v)

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (self.r ** 0.5 if self.use_rslora else self.r)
