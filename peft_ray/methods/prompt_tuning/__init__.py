"""Prompt tuning (Lester et al., 2021), registered as method.name 'prompt_tuning'."""

from peft_ray.methods.base import METHODS, MethodSpec
from peft_ray.methods.prompt_tuning.config import PromptTuningConfig
from peft_ray.methods.prompt_tuning.model import PromptTuningModel, build, peft_config

METHODS.register("prompt_tuning")(
    MethodSpec(name="prompt_tuning", config_cls=PromptTuningConfig, build=build, peft_type="PROMPT_TUNING",
               peft_config=peft_config))

__all__ = ["PromptTuningConfig", "PromptTuningModel", "build"]
