"""P-tuning, registered as method.name 'p_tuning'."""

from peft_ray.methods.base import METHODS, MethodSpec
from peft_ray.methods.p_tuning.config import PTuningConfig
from peft_ray.methods.p_tuning.model import PTuningModel, build, peft_config

METHODS.register("p_tuning")(
    MethodSpec(name="p_tuning", config_cls=PTuningConfig, build=build, peft_type="P_TUNING",
               peft_config=peft_config))

__all__ = ["PTuningConfig", "PTuningModel", "build", "peft_config"]
