"""Frozen nn.Linear layers on the CPU through oneDNN's product (peft_ray_kernels.onednn: why, and
what it leaves to torch).

Per instance and explicit: `use_cpu_linear(model)` gives every frozen `nn.Linear` of the model the
class CpuLinear (state, hooks and `isinstance` unchanged), whose forward asks `onednn.linear`
for each call, so a GPU tensor, another dtype or a weight that trains later still gets torch's op.
The methods' own products (LoRA's, prompt concat's) ask it in peft_ray_kernels.eager.
"""

from __future__ import annotations

import torch

from peft_ray_kernels import onednn


class CpuLinear(torch.nn.Linear):
    """An nn.Linear whose product goes through `onednn.linear` (the class `use_cpu_linear` gives)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return onednn.linear(input, self.weight, self.bias)


def use_cpu_linear(model: torch.nn.Module) -> int:
    """Every frozen nn.Linear of `model` (exactly that class) becomes a CpuLinear: call it after the
    method has chosen what trains. The number of layers changed."""
    if not onednn.available():
        return 0
    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and not any(p.requires_grad for p in module.parameters()):
            module.__class__ = CpuLinear
            n += 1
    return n
