"""Fused linear ops for prompt tuning, prefix tuning and LoRA (Triton + PyTorch reference).

Public API (all take backend="auto" | "torch" | "triton"):
  prompt_concat_linear(prompt, x, weight, bias=None)  -> linear(cat([P; X]))
  prefix_concat_linear(prefix, x, weight, bias=None)  -> cat([prefix; linear(X)])
  lora_linear(x, weight, lora_A, lora_B, scaling, bias=None)
"auto" runs Triton on CUDA tensors and PyTorch on CPU: the reference, except the eager
forms of prompt concat (a shared prompt projected once) and LoRA (the update folded into the
GEMMs), eager.py. Importing this
module does not import triton; the Triton modules load on first use.
See kernels/README.md for where each op plugs into BERT, GPT-2, Llama and T5.
"""
from __future__ import annotations

import torch

from ._backend import BACKENDS, resolve_backend
from .eager import lora_linear_eager, prompt_concat_linear_eager
from .reference import lora_linear_ref, prefix_concat_linear_ref, prompt_concat_linear_ref

__all__ = ["BACKENDS", "resolve_backend", "lora_linear", "prefix_concat_linear", "prompt_concat_linear",
           "lora_linear_ref", "prefix_concat_linear_ref", "prompt_concat_linear_ref"]


def prompt_concat_linear(prompt: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None = None, *, backend: str = "auto") -> torch.Tensor:
    """(n_p | B×n_p, d_in) prompt and (B, n, d_in) x -> (B, n_p + n, d_out) = cat([P; X]) @ W^T + b."""
    if resolve_backend(backend, x.device) == "torch":
        return prompt_concat_linear_eager(prompt, x, weight, bias)
    from .prompt_concat import PromptConcatLinearFunction
    return PromptConcatLinearFunction.apply(*_autocast_inputs(x.device, prompt, x, weight, bias))


def prefix_concat_linear(prefix: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None = None, *, backend: str = "auto") -> torch.Tensor:
    """(n_p | B×n_p, d_out) prefix and (B, n, d_in) x -> (B, n_p + n, d_out) = cat([prefix; X W^T + b])."""
    if resolve_backend(backend, x.device) == "torch":
        return prefix_concat_linear_ref(prefix, x, weight, bias)
    from .prefix_concat import PrefixConcatLinearFunction
    return PrefixConcatLinearFunction.apply(*_autocast_inputs(x.device, prefix, x, weight, bias))


def lora_linear(x: torch.Tensor, weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor,
                scaling: float, bias: torch.Tensor | None = None, *, backend: str = "auto") -> torch.Tensor:
    """(..., d_in) -> (..., d_out) = x W^T + b + scaling * (x A^T) B^T; A: (r, d_in), B: (d_out, r)."""
    if resolve_backend(backend, x.device) == "torch":
        if _autocast_dtype(x.device.type) is not None:   # autocast does not reach a custom Function
            return lora_linear_ref(x, weight, lora_A, lora_B, scaling, bias)
        return lora_linear_eager(x, weight, lora_A, lora_B, scaling, bias)
    from .lora import LoRALinearFunction
    x, weight, lora_A, lora_B, bias = _autocast_inputs(x.device, x, weight, lora_A, lora_B, bias)
    return LoRALinearFunction.apply(x, weight, lora_A, lora_B, float(scaling), bias)


def _autocast_inputs(device: torch.device, *tensors):
    """Autocast does not reach a custom autograd Function, so under it fp32 weights would meet
    bf16 activations in the fused op (a dtype error). Cast every floating input to the autocast
    dtype, as autocast casts a linear's; gradients flow back through the casts in fp32."""
    dtype = _autocast_dtype(device.type)
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors)


def _autocast_dtype(kind: str):
    """The active autocast dtype for this device type, or None. torch < 2.4 has only per-device
    calls; bench/gpu_check.sh runs on whatever torch the lent machine has, not pyproject's."""
    try:
        return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    except (TypeError, AttributeError):
        if kind == "cuda":
            return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
