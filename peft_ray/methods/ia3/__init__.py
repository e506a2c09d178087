"""IA3, registered as method.name 'ia3'."""

from peft_ray.methods.base import METHODS, MethodSpec
from peft_ray.methods.ia3.config import IA3Config
from peft_ray.methods.ia3.model import IA3Model, build, merge, peft_config

METHODS.register("ia3")(
    MethodSpec(name="ia3", config_cls=IA3Config, build=build, peft_type="IA3", peft_config=peft_config,
               merge=merge))

__all__ = ["IA3Config", "IA3Model", "build", "merge", "peft_config"]
