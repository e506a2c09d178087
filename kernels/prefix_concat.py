"""prefix_concat_linear: [prefix; linear(X)] written into one output buffer.

Layer 2 (launchers) and layer 3 (autograd Function); the GEMM kernel is in gemm.py.
The prefix is already in output space (prefix tuning's per-layer K/V rows), so
only X goes through the GEMM, which writes at row offset n_p; the prefix rows
are copied in (a broadcast copy when shared). This removes the torch.cat pass
over the whole (B, n_p + n, d_out) K/V tensor.
"""
from __future__ import annotations

import torch

from ._checks import check_prefix_concat
from .gemm import gemm, linear_into


def prefix_concat_forward(prefix, x, weight, bias=None) -> torch.Tensor:
    check_prefix_concat(prefix, x, weight, bias)
    B, n, _ = x.shape
    n_p, d_out = prefix.shape[-2], weight.shape[0]
    out = x.new_empty(B, n_p + n, d_out)  # (B, n_p + n, d_out)
    linear_into(out[:, n_p:], x, weight, bias)  # (B, n, d_out) at offset n_p
    out[:, :n_p].copy_(prefix)  # broadcasts a shared (n_p, d_out) prefix over B
    return out


def prefix_concat_backward(g, prefix, x, weight, needs, has_bias):
    """Returns (d_prefix, d_x, d_weight, d_bias); entries not in `needs` are None."""
    n_p = prefix.shape[-2]
    g_p, g_x = g[:, :n_p], g[:, n_p:]  # (B, n_p, d_out), (B, n, d_out)
    d_prefix = d_x = d_w = d_b = None
    if needs[0]:
        d_prefix = g_p.sum(0, dtype=torch.float32).to(g.dtype) if prefix.dim() == 2 else g_p.contiguous()
    if needs[1]:
        d_x = linear_into(x.new_empty(x.shape), g_x, weight.t())  # (B, n, d_in)
    if needs[2]:
        d_w = weight.new_empty(weight.shape)  # (d_out, d_in) = sum_b g_x[b]^T x[b], fp32 in-kernel
        gemm(g_x.transpose(1, 2).unsqueeze(0), x.transpose(1, 2).unsqueeze(0), d_w)
    if needs[3] and has_bias:
        d_b = g_x.sum((0, 1), dtype=torch.float32).to(g.dtype)  # (d_out,)
    return d_prefix, d_x, d_w, d_b


class PrefixConcatLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, prefix, x, weight, bias):
        out = prefix_concat_forward(prefix, x, weight, bias)
        ctx.save_for_backward(prefix, x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        prefix, x, weight = ctx.saved_tensors
        return prefix_concat_backward(grad_out, prefix, x, weight, ctx.needs_input_grad, ctx.has_bias)
