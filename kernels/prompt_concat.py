"""prompt_concat_linear: linear([P; X]) without materialising the concatenation.

Layer 2 (launchers) and layer 3 (autograd Function); the GEMM kernel is in gemm.py.
Forward, shared prompt: the n_p prompt rows are multiplied once and the one tile
is stored into all B batch slots (gemm's S dim); the x rows are written by the
tiled GEMM straight into rows n_p.. of the output. No (B, n_p + n, d_in) buffer.
"""
from __future__ import annotations

import torch

from ._checks import check_prompt_concat
from .gemm import gemm, linear_into


def prompt_concat_forward(prompt, x, weight, bias=None) -> torch.Tensor:
    check_prompt_concat(prompt, x, weight, bias)
    B, n, _ = x.shape
    n_p, d_out = prompt.shape[-2], weight.shape[0]
    out = x.new_empty(B, n_p + n, d_out)  # (B, n_p + n, d_out)
    linear_into(out[:, n_p:], x, weight, bias)  # (B, n, d_out) rows at offset n_p
    if prompt.dim() == 2:  # shared: one (n_p, d_out) product, stored B times
        gemm(prompt, weight, out[:, :n_p].unsqueeze(0), bias=bias)  # c: (1, B, n_p, d_out)
    else:
        linear_into(out[:, :n_p], prompt, weight, bias)  # (B, n_p, d_out)
    return out


def _weight_grad(g_p, g_x, prompt, x, g_p_sum):
    """d_W = sum_b g_x[b]^T x[b] + (prompt part), summed in fp32 then cast once."""
    d_w = torch.empty(g_x.shape[-1], x.shape[-1], dtype=torch.float32, device=x.device)  # (d_out, d_in)
    gemm(g_x.transpose(1, 2).unsqueeze(0), x.transpose(1, 2).unsqueeze(0), d_w)  # R = B reduction
    if g_p_sum is not None:  # shared: (sum_b g_p[b])^T @ P, fp32 (n_p rows only, so the upcast is cheap)
        gemm(g_p_sum.t(), prompt.float().t(), d_w, accumulate=True)
    else:
        gemm(g_p.transpose(1, 2).unsqueeze(0), prompt.transpose(1, 2).unsqueeze(0), d_w, accumulate=True)
    return d_w.to(x.dtype)


def prompt_concat_backward(g, prompt, x, weight, needs, has_bias):
    """Returns (d_prompt, d_x, d_weight, d_bias); entries not in `needs` are None."""
    n_p = prompt.shape[-2]
    g_p, g_x = g[:, :n_p], g[:, n_p:]  # (B, n_p, d_out), (B, n, d_out)
    w_t = weight.t()  # (d_in, d_out) view: g @ W is an NT-GEMM against W^T
    shared = prompt.dim() == 2
    g_p_sum = g_p.sum(0, dtype=torch.float32) if shared else None  # (n_p, d_out), fp32
    d_prompt = d_x = d_w = d_b = None
    if needs[0] and shared:
        d_prompt = gemm(g_p_sum.to(g.dtype), w_t, prompt.new_empty(prompt.shape))  # (n_p, d_in)
    elif needs[0]:
        d_prompt = linear_into(prompt.new_empty(prompt.shape), g_p, w_t)  # (B, n_p, d_in)
    if needs[1]:
        d_x = linear_into(x.new_empty(x.shape), g_x, w_t)  # (B, n, d_in)
    if needs[2]:
        d_w = _weight_grad(g_p, g_x, prompt, x, g_p_sum)
    if needs[3] and has_bias:
        d_b = g.sum((0, 1), dtype=torch.float32).to(g.dtype)  # (d_out,)
    return d_prompt, d_x, d_w, d_b


class PromptConcatLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, prompt, x, weight, bias):
        out = prompt_concat_forward(prompt, x, weight, bias)
        ctx.save_for_backward(prompt, x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        prompt, x, weight = ctx.saved_tensors
        return prompt_concat_backward(grad_out, prompt, x, weight, ctx.needs_input_grad, ctx.has_bias)
