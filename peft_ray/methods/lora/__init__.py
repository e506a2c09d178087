"""LoRA, registered as method.name 'lora'."""

from peft_ray.methods.base import METHODS, MethodSpec
from peft_ray.methods.lora.config import LoraConfig
from peft_ray.methods.lora.model import LoraModel, build, merge, peft_config

METHODS.register("lora")(
    MethodSpec(name="lora", config_cls=LoraConfig, build=build, peft_type="LORA", peft_config=peft_config,
               merge=merge))

__all__ = ["LoraConfig", "LoraModel", "build", "merge", "peft_config"]
