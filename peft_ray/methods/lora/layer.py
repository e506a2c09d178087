"""LoraLinear: a frozen linear layer plus the trainable low-rank update, through the fused op.

    y = x W^T + b + scaling * (x A^T) B^T        A: (r, d_in), B: (d_out, r)

The key names (``<path>.lora_A.weight``, ``<path>.lora_B.weight``) and the init
(A Kaiming-uniform, B zero: the adapter starts as the identity) are HF PEFT's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from peft_ray.methods.targets import in_out, is_conv1d, weight_out_in


class LoraLinear(nn.Module):
    # ZeRO-3 gathers a module's *own* parameters before its forward; forward reads
    # base_layer.weight and lora_A/B.weight directly, so the whole subtree is one leaf.
    _z3_leaf = True

    def __init__(self, base_layer: nn.Module, r: int, scaling: float, dropout: float, backend: str,
                 generator: torch.Generator):
        super().__init__()
        d_in, d_out = in_out(base_layer)
        w = base_layer.weight
        self.base_layer = base_layer
        self.lora_A = nn.Linear(d_in, r, bias=False, device=w.device, dtype=w.dtype)
        self.lora_B = nn.Linear(r, d_out, bias=False, device=w.device, dtype=w.dtype)
        if w.device.type != "meta":
            with torch.no_grad():
                a = torch.empty(r, d_in)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
                self.lora_A.weight.copy_(a)
                self.lora_B.weight.zero_()
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.backend = backend
        self.adapter_enabled = True

    # HF code sometimes reads `layer.weight` (T5's feed-forward checks its dtype), as PEFT's layers allow.
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self):
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:                      # (..., d_in) -> (..., d_out)
        if not self.adapter_enabled:
            return self.base_layer(x)
        w, bias = weight_out_in(self.base_layer), self.base_layer.bias
        if self.training and isinstance(self.dropout, nn.Dropout):
            # The fused op feeds one x to both paths; dropout needs the adapter's own copy.
            return F.linear(x, w, bias) + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling
        return kernels.lora_linear(x, w, self.lora_A.weight, self.lora_B.weight, self.scaling, bias,
                                   backend=self.backend)

    def delta_weight(self) -> torch.Tensor:
        """scaling * B A in the base layer's own layout ((d_in, d_out) for Conv1D)."""
        delta = self.scaling * (self.lora_B.weight @ self.lora_A.weight)   # (d_out, d_in)
        return delta.t() if is_conv1d(self.base_layer) else delta

    def merged(self) -> nn.Module:
        """The base layer with the update folded into its weight (this wrapper is then dropped)."""
        with torch.no_grad():
            self.base_layer.weight.add_(self.delta_weight().to(self.base_layer.weight.dtype))
        return self.base_layer
