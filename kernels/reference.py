"""Plain-PyTorch references: the semantics every fused op must match.

Used by backend="torch" and by the tests. Deliberately the naive form
(concatenate, then linear) so that correctness is obvious by reading.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _batched(p: torch.Tensor, B: int) -> torch.Tensor:
    """(n_p, d) shared -> (B, n_p, d) view; (B, n_p, d) per sample is returned as is."""
    return p.expand(B, -1, -1) if p.dim() == 2 else p


def prompt_concat_linear_ref(prompt, x, weight, bias=None) -> torch.Tensor:
    """linear(cat([P; X])): (B, n_p + n, d_out)."""
    return F.linear(torch.cat([_batched(prompt, x.shape[0]), x], dim=1), weight, bias)


def prefix_concat_linear_ref(prefix, x, weight, bias=None) -> torch.Tensor:
    """cat([prefix; linear(X)]): (B, n_p + n, d_out)."""
    return torch.cat([_batched(prefix, x.shape[0]), F.linear(x, weight, bias)], dim=1)


def lora_linear_ref(x, weight, lora_A, lora_B, scaling: float, bias=None) -> torch.Tensor:
    """Frozen linear plus the LoRA update: x W^T + b + scaling * (x A^T) B^T, shape (..., d_out)."""
    return F.linear(x, weight, bias) + scaling * F.linear(F.linear(x, lora_A), lora_B)
