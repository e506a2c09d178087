"""LoRA config. Field names, defaults and meanings are HF PEFT 0.21's LoraConfig
(plus `loraplus_lr_ratio`, which PEFT takes in `create_loraplus_optimizer` and
LLaMA-Factory/axolotl take under this name)."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import Field, field_validator

from peft_ray.methods.base import MethodConfig
from peft_ray.storage import PathStr
from peft_ray.methods.targets import check_targets

INITS = "true, false, 'gaussian', 'pissa', 'pissa_niter_<K>' or 'olora'"
_PISSA_NITER = re.compile(r"pissa_niter_(\d+)")


class LoraConfig(MethodConfig):
    name: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, le=4096, description="rank of the update B A")
    lora_alpha: float = Field(8, gt=0, le=1e6, description="scale: the update is multiplied by lora_alpha / r")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input (0: fused kernel)")
    use_rslora: bool = Field(False, description="scale by lora_alpha / sqrt(r) (rank-stabilized LoRA)")
    use_dora: bool = Field(False, description="DoRA: a trained per-output-row magnitude times the direction "
                           "(W + s B A) / ||W + s B A||")
    init_lora_weights: Union[bool, str] = Field(
        True, description=f"{INITS}: true = A Kaiming-uniform, B zero; false = both random (the adapter "
        "starts non-zero); 'gaussian' = A ~ N(0, 1/r); 'pissa' = A, B from the top-r SVD of W "
        "('pissa_niter_K': randomized SVD, K iterations); 'olora' = from a QR of W")
    loraplus_lr_ratio: Optional[float] = Field(
        None, gt=0, description="LoRA+: lora_B (and DoRA's magnitude) train at train.lr * this ratio (PEFT "
        "suggests >= 1, e.g. 16); null: one learning rate")
    target_modules: Optional[Union[List[str], str]] = Field(
        None, description="linear layers to adapt: a list of names (suffix match; each must match a "
        "layer) or a regex over whole module paths; null: the family default "
        "(BERT query/value, GPT-2 c_attn, Llama q_proj/v_proj, T5 q/v)")
    modules_to_save: Optional[List[str]] = Field(
        None, description="extra base modules to train and save in full (the head is added for classification)")
    init_from: Optional[PathStr] = Field(None, description="an HF PEFT LoRA adapter folder to start from")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v):
        return check_targets(v)

    @field_validator("init_lora_weights")
    @classmethod
    def _init(cls, v):
        if isinstance(v, bool) or v in ("gaussian", "pissa", "olora") or _PISSA_NITER.fullmatch(v):
            return v
        raise ValueError(f"{v!r} is not supported; use one of {INITS}")

    def module_patterns(self) -> Dict[str, Any]:
        return {"method.target_modules": self.target_modules}

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (self.r ** 0.5 if self.use_rslora else self.r)

    @property
    def mutates_base(self) -> bool:
        """PiSSA/OLoRA: the init takes s B0 A0 out of W (PEFT's W_res), see layer.py."""
        return isinstance(self.init_lora_weights, str) and self.init_lora_weights != "gaussian"
