"""LoraLinear: a frozen linear layer plus the trainable low-rank update, through the fused op.

    y = x W^T + b + scaling * (x A^T) B^T        A: (r, d_in), B: (d_out, r)

The init (A Kaiming-uniform, B zero: the adapter starts as the identity) and the
saved keys (``<path>.lora_A.weight``, ``<path>.lora_B.weight``) are HF PEFT's.

Why A, B, W and b are all *direct* parameters of this module (not child modules):
ZeRO-3 gathers a module's own parameters in its pre-forward hook, and the fused op
reads them as tensors without calling any child. The alternative, flagging the
module a ZeRO-3 "leaf", reduces the leaf's gradients in a full backward hook that
fires before A's and B's gradients exist whenever the layer's input needs no
gradient (every frozen layer before the first adapter): it crashes in AccumulateGrad.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from peft_ray.methods.targets import in_out, is_conv1d


class LoraLinear(nn.Module):
    def __init__(self, base_layer: nn.Module, r: int, scaling: float, dropout: float, backend: str,
                 generator: torch.Generator):
        super().__init__()
        d_in, d_out = in_out(base_layer)
        w = base_layer.weight
        # The original layer, outside the module tree: it shares W and b with us and is what merging returns.
        object.__setattr__(self, "base_layer", base_layer)
        self.weight, self.bias = base_layer.weight, base_layer.bias   # frozen; (d_in, d_out) for Conv1D
        self.fan_in_fan_out = is_conv1d(base_layer)
        self.lora_A = nn.Parameter(torch.empty(r, d_in, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, device=w.device, dtype=w.dtype))
        if w.device.type != "meta":
            with torch.no_grad():
                a = torch.empty(r, d_in)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
                self.lora_A.copy_(a)
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.backend = backend
        self.adapter_enabled = True

    def weight_out_in(self) -> torch.Tensor:
        return self.weight.t() if self.fan_in_fan_out else self.weight           # (d_out, d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                          # (..., d_in) -> (..., d_out)
        w = self.weight_out_in()
        if not self.adapter_enabled:
            return F.linear(x, w, self.bias)
        if self.training and self.dropout is not None:
            # The fused op feeds one x to both paths; dropout needs the adapter's own copy.
            h = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
            return F.linear(x, w, self.bias) + h * self.scaling
        return kernels.lora_linear(x, w, self.lora_A, self.lora_B, self.scaling, self.bias, backend=self.backend)

    def delta_weight(self) -> torch.Tensor:
        """scaling * B A in the base layer's own layout ((d_in, d_out) for Conv1D)."""
        delta = self.scaling * (self.lora_B @ self.lora_A)                      # (d_out, d_in)
        return delta.t() if self.fan_in_fan_out else delta

    def merged(self) -> nn.Module:
        """The original layer with the update folded into its weight (this wrapper is then dropped)."""
        with torch.no_grad():
            self.weight.add_(self.delta_weight().to(self.weight.dtype))
        return self.base_layer
