"""PEFT methods. Each lives in its own folder and registers itself in METHODS.

A method registers a ``MethodSpec`` (methods/base.py):
- ``config_cls``: a pydantic model of its job-spec fields (PEFT-compatible names);
- ``build(model, cfg, ctx)``: wraps a frozen base model, and saves/loads the adapter in HF PEFT's layout;
- ``peft_type`` and ``peft_config``: its HF PEFT type and ``adapter_config.json``;
- ``merge``: the base with the update folded in, where a plain model can hold it (LoRA, IA3).
"""

from __future__ import annotations

from peft_ray.methods.base import METHODS, MethodSpec, get_method

# Importing the method packages registers them (explicit, not a side effect of
# importing peft_ray itself).
from peft_ray.methods import prompt_tuning  # noqa: F401,E402
from peft_ray.methods import ia3, lora, p_tuning, prefix_tuning  # noqa: F401,E402

__all__ = ["METHODS", "MethodSpec", "get_method"]
