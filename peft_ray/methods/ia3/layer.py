"""IA3Linear: learned per-channel scales on a frozen linear layer (Liu et al., 2022).

Attention targets scale the output, ``y = (x W^T + b) * l`` with l: (d_out, 1);
feedforward targets scale the input, ``y = (x * l) W^T + b`` with l: (1, d_in).
Shapes, the saved key (``<path>.ia3_l``) and the init (ones: the identity) are HF PEFT's.
W, b and l are direct parameters of this module for ZeRO-3 (see lora/layer.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peft_ray.methods.targets import in_out, is_conv1d


class IA3Linear(nn.Module):
    def __init__(self, base_layer: nn.Module, is_feedforward: bool):
        super().__init__()
        d_in, d_out = in_out(base_layer)
        w = base_layer.weight
        object.__setattr__(self, "base_layer", base_layer)  # shares W and b; what merging returns
        self.weight, self.bias = base_layer.weight, base_layer.bias
        self.fan_in_fan_out = is_conv1d(base_layer)
        shape = (1, d_in) if is_feedforward else (d_out, 1)
        self.ia3_l = nn.Parameter(torch.ones(shape, device=w.device, dtype=w.dtype))
        self.is_feedforward = is_feedforward
        self.adapter_enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.t() if self.fan_in_fan_out else self.weight              # (d_out, d_in)
        if not self.adapter_enabled:
            return F.linear(x, w, self.bias)
        scale = self.ia3_l.flatten()                                            # (d_in,) or (d_out,)
        if self.is_feedforward:
            return F.linear((x.to(scale.dtype) * scale).to(x.dtype), w, self.bias)
        y = F.linear(x, w, self.bias)
        return (y * scale).to(y.dtype)

    def linear_map(self):
        """(W', b') with forward(x) = x W'^T + b', carrying l's gradient: for callers that reorder the
        products (tasks/classification/readout.py). None under ZeRO-3, where W is gathered only around
        this module's own forward."""
        if hasattr(self.weight, "ds_id"):
            return None
        w = self.weight.t() if self.fan_in_fan_out else self.weight              # (d_out, d_in)
        if not self.adapter_enabled:
            return w, self.bias
        if self.is_feedforward:
            return w * self.ia3_l, self.bias                                    # scales W's columns
        return w * self.ia3_l, (None if self.bias is None else self.bias * self.ia3_l.flatten())

    def merged(self) -> nn.Module:
        """The original layer with the scale folded in: rows (output) or columns (input) of W."""
        with torch.no_grad():
            scale = self.ia3_l.to(self.weight.dtype)                            # (d_out, 1) or (1, d_in)
            self.weight.mul_(scale.t() if self.fan_in_fan_out else scale)       # Conv1D weight is (d_in, d_out)
            if not self.is_feedforward and self.bias is not None:
                self.bias.mul_(scale.flatten())
        return self.base_layer
