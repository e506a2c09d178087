"""Prefix tuning, registered as method.name 'prefix_tuning'."""

from peft_ray.methods.base import METHODS, MethodSpec
from peft_ray.methods.prefix_tuning.config import PrefixTuningConfig
from peft_ray.methods.prefix_tuning.model import PrefixTuningModel, build, peft_config

METHODS.register("prefix_tuning")(
    MethodSpec(name="prefix_tuning", config_cls=PrefixTuningConfig, build=build, peft_type="PREFIX_TUNING",
               peft_config=peft_config))

__all__ = ["PrefixTuningConfig", "PrefixTuningModel", "build", "peft_config"]
