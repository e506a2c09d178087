"""LoraLinear: a frozen linear layer plus the trainable low-rank update, through the fused op.

    y = x W^T + b + s (x A^T) B^T          A: (r, d_in), B: (d_out, r), s = alpha / r (rsLoRA: alpha / sqrt r)

DoRA (`use_dora`, PEFT's DoraLinearLayer): m (d_out,) trains the length of each output row,
    y = m / ||W + s B A||_row * (x W^T + s (x A^T) B^T) + b,
with the norm detached (DoRA paper section 4.3, as PEFT) and m initialised to ||W + s B0 A0||_row.

PiSSA/OLoRA (`init_lora_weights`): PEFT overwrites the base weight with W_res = W - s B0 A0.
We keep W and carry B0, A0 as frozen buffers, so the layer computes W + s (B A - B0 A0), i.e. a
rank-2r LoRA with A' = [A; A0], B' = [B, -B0] (`factors()`). The same function, but: the saved
adapter is already PEFT's *converted* form (loads on the original base, no
`path_initial_model_for_weight_conversion` step); disabling the adapter gives the real base;
ZeRO-3 never writes a partitioned frozen weight; and the fused kernel pads r to 16 anyway.

The fused `lora_linear` runs for every variant (DoRA: the GEMM; the row norm and the m scale
are torch ops around it, since the kernel has no per-column scale). One fallback: while
training with lora_dropout > 0 the adapter needs its own dropped copy of x, so the layer runs
in plain torch (PEFT's formulas, DoRA's included).

The init and saved keys (``<path>.lora_A.weight``, ``<path>.lora_B.weight``,
``<path>.lora_magnitude_vector``) are HF PEFT's.

Why A, B, m, W and b are all *direct* parameters of this module (not child modules):
ZeRO-3 gathers a module's own parameters in its pre-forward hook, and the fused op
reads them as tensors without calling any child. The alternative, flagging the
module a ZeRO-3 "leaf", reduces the leaf's gradients in a full backward hook that
fires before A's and B's gradients exist whenever the layer's input needs no
gradient (every frozen layer before the first adapter): it crashes in AccumulateGrad.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from peft_ray_kernels import ops
from peft_ray.methods.lora.init import initial_factors
from peft_ray.methods.targets import in_out, is_conv1d


class LoraLinear(nn.Module):
    def __init__(self, base_layer: nn.Module, r: int, scaling: float, dropout: float, backend: str,
                 generator: torch.Generator, init: Union[bool, str] = True, use_dora: bool = False):
        super().__init__()
        d_in, d_out = in_out(base_layer)
        w = base_layer.weight
        # The original layer, outside the module tree: it shares W and b with us and is what merging returns.
        object.__setattr__(self, "base_layer", base_layer)
        self.weight, self.bias = base_layer.weight, base_layer.bias   # frozen; (d_in, d_out) for Conv1D
        self.fan_in_fan_out = is_conv1d(base_layer)
        self.r, self.scaling = r, scaling
        self.lora_A = nn.Parameter(torch.zeros(r, d_in, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, device=w.device, dtype=w.dtype))
        mutates = isinstance(init, str) and init != "gaussian"
        # PiSSA/OLoRA's B0 A0, frozen (not saved by state_dict: rebuilt from W, or read from the adapter).
        self.register_buffer("lora_A0", torch.zeros_like(self.lora_A) if mutates else None, persistent=False)
        self.register_buffer("lora_B0", torch.zeros_like(self.lora_B) if mutates else None, persistent=False)
        self.lora_magnitude_vector = (nn.Parameter(torch.ones(d_out, device=w.device, dtype=w.dtype))
                                      if use_dora else None)
        if w.device.type != "meta":
            self._initialise(init, generator)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.backend = backend
        self.adapter_enabled = True

    @torch.no_grad()
    def _initialise(self, init, generator) -> None:
        a, b, mutates = initial_factors(self.weight_out_in(), self.r, self.scaling, init, generator)
        self.lora_A.copy_(a)
        self.lora_B.copy_(b)
        if mutates:
            self.lora_A0.copy_(a)
            self.lora_B0.copy_(b)
        if self.lora_magnitude_vector is not None:
            a, b = self.factors()
            self.lora_magnitude_vector.copy_(self.weight_norm(self.weight_out_in(), a, b))

    def weight_out_in(self) -> torch.Tensor:
        return self.weight.t() if self.fan_in_fan_out else self.weight           # (d_out, d_in)

    def factors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(A', B'): (A, B), or ([A; A0], [B, -B0]) of rank 2r after a PiSSA/OLoRA init."""
        if self.lora_A0 is None:
            return self.lora_A, self.lora_B
        return torch.cat([self.lora_A, self.lora_A0]), torch.cat([self.lora_B, -self.lora_B0], dim=1)

    def weight_norm(self, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """||W + s B A|| per output row (d_out,), without a gradient (PEFT's get_weight_norm)."""
        with torch.no_grad():
            return torch.linalg.norm(w + self.scaling * (b @ a), dim=1).to(w.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                          # (..., d_in) -> (..., d_out)
        w = self.weight_out_in()
        if not self.adapter_enabled:
            return F.linear(x, w, self.bias)
        a, b = self.factors()
        m = self.lora_magnitude_vector
        if self.training and self.dropout is not None:
            return self._forward_dropout(x, w, a, b)
        if m is None:
            return ops.lora_linear(x, w, a, b, self.scaling, self.bias, backend=self.backend)
        y = (m / self.weight_norm(w, a, b)) * ops.lora_linear(x, w, a, b, self.scaling, backend=self.backend)
        return y if self.bias is None else y + self.bias

    def _forward_dropout(self, x, w, a, b) -> torch.Tensor:
        """Plain torch: the fused op feeds one x to both paths, dropout needs the adapter's own copy."""
        xd = self.dropout(x)
        h = F.linear(F.linear(xd, a), b) * self.scaling                        # (..., d_out)
        base = F.linear(x, w, self.bias)
        if self.lora_magnitude_vector is None:
            return base + h
        scale = self.lora_magnitude_vector / self.weight_norm(w, a, b)         # (d_out,)
        return base + (scale - 1) * F.linear(xd, w) + scale * h                # PEFT's DoRA with dropout

    def linear_map(self):
        """(W', b) with forward(x) = x W'^T + b, W' = W + s B' A' carrying the factors' gradient, where
        the layer is that affine map: not under DoRA, nor while its dropout trains. For callers that
        reorder the products (tasks/classification/readout.py). None under ZeRO-3, where W is gathered
        only around this module's own forward."""
        dropping = self.training and self.dropout is not None
        if self.lora_magnitude_vector is not None or dropping or hasattr(self.weight, "ds_id"):
            return None
        w = self.weight_out_in()
        if not self.adapter_enabled:
            return w, self.bias
        a, b = self.factors()
        return w + self.scaling * (b @ a), self.bias

    def delta_weight(self) -> torch.Tensor:
        """scaling * B' A' in the base layer's own layout ((d_in, d_out) for Conv1D)."""
        a, b = self.factors()
        delta = self.scaling * (b @ a)                                          # (d_out, d_in)
        return delta.t() if self.fan_in_fan_out else delta

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """W + s B' A' (DoRA: times m / ||W + s B' A'|| per output row), in the base layout."""
        merged = self.weight + self.delta_weight().to(self.weight.dtype)
        if self.lora_magnitude_vector is None:
            return merged
        a, b = self.factors()
        scale = self.lora_magnitude_vector / self.weight_norm(self.weight_out_in(), a, b)   # (d_out,)
        return merged * (scale[None, :] if self.fan_in_fan_out else scale[:, None])

    def merged(self) -> nn.Module:
        """The original layer with the update folded into its weight (this wrapper is then dropped)."""
        with torch.no_grad():
            self.weight.copy_(self.merged_weight())
        return self.base_layer
