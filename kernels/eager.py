"""Eager PyTorch forms for the CPU: the references' maths with less work.

Prompt concat (`prompt_concat_linear_eager`): with one prompt shared by the batch ((n_p, d_in)),
the reference concatenates it to every sequence and projects B copies of the same rows; here the
prompt is projected once and broadcast into the output, and its gradient is the batch sum of the
output gradient at those rows times W (n_p rows, not B x n_p). A per-sample prompt takes the
reference. Same result to rounding (tests/kernels/test_kernel_prompt_eager.py).

LoRA (`lora_linear_eager`): the reference's maths with the update folded into the GEMMs.

`lora_linear_ref` computes x W^T + b, then s (x A^T) B^T as a separate (N, d_out) tensor, scales
it and adds it: two extra passes over the output forward, and in backward a scaled copy of the
output gradient and a second (N, d_in) input gradient that autograd then adds. Here the update
accumulates into the base output inside one GEMM (`addmm_` with alpha = s), and the input
gradient's low-rank term accumulates into g W the same way; only (N, r) tensors are scaled.
Same result to rounding (tests/kernels/test_kernel_lora.py); saves x and x A^T as the reference's
autograd does.

Both take a frozen W's products from oneDNN on the CPU (onednn.py), torch's elsewhere.
"""
from __future__ import annotations

import torch

from . import onednn
from .reference import prompt_concat_linear_ref


def prompt_concat_linear_eager(prompt, x, weight, bias=None) -> torch.Tensor:
    """linear(cat([P; X])) with a shared (n_p, d_in) prompt projected once; (B, n_p, d_in): the reference."""
    if prompt.dim() == 3:
        return prompt_concat_linear_ref(prompt, x, weight, bias)
    projected = onednn.linear(prompt, weight, bias)                  # (n_p, d_out), once for the batch
    return torch.cat([projected.expand(x.shape[0], -1, -1), onednn.linear(x, weight, bias)], dim=1)


class LoRALinearEager(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, lora_A, lora_B, scaling: float, bias):
        x2 = x.reshape(-1, x.shape[-1])                                   # (N, d_in)
        u = x2 @ lora_A.t()                                               # (N, r)
        if onednn.fits(x2, weight, bias):                                 # a frozen W (onednn.py: why)
            y = onednn.product(x2, weight, bias)
        else:
            y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        y.addmm_(u, lora_B.t(), alpha=scaling)                            # + s (x A^T) B^T, in place
        ctx.save_for_backward(x2, weight, lora_A, lora_B, u)
        ctx.scaling, ctx.lead = scaling, x.shape[:-1]
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, g):
        x2, weight, lora_A, lora_B, u = ctx.saved_tensors
        s, need = ctx.scaling, ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])                                   # (N, d_out)
        gu = (g2 @ lora_B).mul_(s)                                        # (N, r): d loss / d (x A^T)
        d_x = d_w = d_a = d_b = d_bias = None
        if need[0]:
            g_w = onednn.product(g2.contiguous(), weight.t()) if onednn.fits(g2, weight) else g2 @ weight
            d_x = g_w.addmm_(gu, lora_A).view(*ctx.lead, x2.shape[-1])
        if need[1]:
            d_w = g2.t() @ x2
        if need[2]:
            d_a = gu.t() @ x2
        if need[3]:
            d_b = (g2.t() @ u).mul_(s)
        if need[5]:
            d_bias = g2.sum(0)
        return d_x, d_w, d_a, d_b, None, d_bias


def lora_linear_eager(x, weight, lora_A, lora_B, scaling: float, bias=None) -> torch.Tensor:
    return LoRALinearEager.apply(x, weight, lora_A, lora_B, float(scaling), bias)
