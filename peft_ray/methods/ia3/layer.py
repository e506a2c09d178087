"""IA3Linear: learned per-channel scales on a frozen linear layer (Liu et al., 2022).

Attention targets scale the output, ``y = (x W^T + b) * l`` with l: (d_out, 1);
feedforward targets scale the input, ``y = (x * l) W^T + b`` with l: (1, d_in).
Shapes, key name (``<path>.ia3_l``) and the init (ones: the identity) are HF PEFT's.
"""

from __future__ import annotations

import torch
from torch import nn

from peft_ray.methods.targets import in_out, is_conv1d


class IA3Linear(nn.Module):
    _z3_leaf = True  # one ZeRO-3 fetch for the base weight and the scale

    def __init__(self, base_layer: nn.Module, is_feedforward: bool):
        super().__init__()
        d_in, d_out = in_out(base_layer)
        w = base_layer.weight
        shape = (1, d_in) if is_feedforward else (d_out, 1)
        self.base_layer = base_layer
        self.ia3_l = nn.Parameter(torch.ones(shape, device=w.device, dtype=w.dtype))
        self.is_feedforward = is_feedforward
        self.adapter_enabled = True

    # HF code sometimes reads `layer.weight` (T5's feed-forward checks its dtype), as PEFT's layers allow.
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self):
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.adapter_enabled:
            return self.base_layer(x)
        scale = self.ia3_l.flatten()                                   # (d_in,) or (d_out,)
        if self.is_feedforward:
            return self.base_layer((x.to(scale.dtype) * scale).to(x.dtype))
        y = self.base_layer(x)
        return (y * scale).to(y.dtype)

    def merged(self) -> nn.Module:
        """The base layer with the scale folded in: rows (output) or columns (input) of W."""
        layer, conv = self.base_layer, is_conv1d(self.base_layer)
        with torch.no_grad():
            scale = self.ia3_l.to(layer.weight.dtype)                  # (d_out, 1) or (1, d_in)
            layer.weight.mul_(scale.t() if conv else scale)            # Conv1D weight is (d_in, d_out)
            if not self.is_feedforward and layer.bias is not None:
                layer.bias.mul_(scale.flatten())
        return layer
