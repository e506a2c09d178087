"""Helpers shared by the methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

from torch import nn

from peft_ray.errors import SpecError


@dataclass
class BuildContext:
    """What a method needs to know besides its own config (flat, no spec objects)."""

    tokenizer: Any
    seed: int = 0
    head_modules: List[str] = field(default_factory=list)  # e.g. ["classifier"]
    kernels: str = "auto"  # fused-op backend for methods that use kernels/ (job key `kernels`)


def freeze_except(model: nn.Module, module_names: List[str]) -> None:
    """Freeze every parameter, then unfreeze the named submodules (PEFT's modules_to_save)."""
    for p in model.parameters():
        p.requires_grad_(False)
    found = set()
    for name, module in model.named_modules():
        if any(name == m or name.endswith("." + m) for m in module_names):
            found.update(m for m in module_names if name == m or name.endswith("." + m))
            for p in module.parameters():
                p.requires_grad_(True)
    missing = [m for m in module_names if m not in found]
    if missing:
        raise SpecError(f"method.modules_to_save: no module named {missing} in the model")
