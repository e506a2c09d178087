"""lora_linear: x W^T + b + scaling * (x A^T) B^T in one pass over x.

Layers 1-3 for LoRA. Why one fused K-loop instead of the concatenated-weight
trick ([W; A] as one (d_out + r, d_in) GEMM, then y += s * h B^T):
  * the concat needs a fresh (d_out + r, d_in) copy of W every step, because A
    changes every optimizer step (32 MiB at d = 4096 in bf16), and a second
    kernel that re-reads and re-writes all of y for the B update;
  * fused, each x tile loaded for x W^T also feeds x A^T, the low-rank update is
    added in the epilogue, and y is written once. The price is recomputing the
    (BLOCK_M, r) tile x A^T once per N-tile: BLOCK_R / BLOCK_N extra MMA work
    (16 / 128 = 12.5% at r = 16), which we expect to be cheaper than the extra
    memory passes but have not measured (no GPU in this task; see bench/kernel_speed.py).
The backward reuses the same kernel: d_x = g W + s (g B) A is the same form with
(W, A, B) -> (W^T, B^T, A^T), and its by-product g B is exactly what d_A needs.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._backend import check_kernel_mode
from ._checks import check_lora
from .gemm import _cuda_configs, _prune, dot_precision, gemm, interpret_blocks, tile_ids


@triton.jit
def _lora_kernel(x_ptr, w_ptr, a_ptr, b_ptr, bias_ptr, y_ptr, h_ptr, M, N, K, RANK, scaling,
                 s_xm, s_xk, s_wn, s_wk, s_ar, s_ak, s_bn, s_br, s_ym, s_yn, s_hm, s_hr,
                 HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_R: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 GROUP_M: tl.constexpr):
    pid_m, pid_n = tile_ids(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm64 = rm.to(tl.int64)  # M = prod(leading dims) rows: offsets can pass 2**31 elements
    rr = tl.arange(0, BLOCK_R)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # x W^T
    xa = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)  # x A^T
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        x = tl.load(x_ptr + rm64[:, None] * s_xm + kk[None, :] * s_xk,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)  # (BLOCK_M, BLOCK_K)
        w = tl.load(w_ptr + kk[:, None] * s_wk + rn[None, :] * s_wn,
                    mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)  # (BLOCK_K, BLOCK_N)
        a = tl.load(a_ptr + kk[:, None] * s_ak + rr[None, :] * s_ar,
                    mask=(kk[:, None] < K) & (rr[None, :] < RANK), other=0.0)  # (BLOCK_K, BLOCK_R)
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
        xa = tl.dot(x, a, xa, input_precision=PRECISION)
    xa_lo = xa.to(x_ptr.dtype.element_ty)  # rounded like the reference's (x A^T)
    if pid_n == 0:  # h = x A^T is saved for the backward, by one column of tiles
        tl.store(h_ptr + rm64[:, None] * s_hm + rr[None, :] * s_hr, xa_lo,
                 mask=(rm[:, None] < M) & (rr[None, :] < RANK))
    bt = tl.load(b_ptr + rr[:, None] * s_br + rn[None, :] * s_bn,
                 mask=(rr[:, None] < RANK) & (rn[None, :] < N), other=0.0)  # (BLOCK_R, BLOCK_N)
    acc += scaling * tl.dot(xa_lo, bt, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rm64[:, None] * s_ym + rn[None, :] * s_yn, acc.to(y_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


_lora_tuned = triton.autotune(configs=_cuda_configs(), key=["M", "N", "K"],
                              prune_configs_by={"early_config_prune": _prune})(_lora_kernel)


def lora_fused(x2, weight, lora_A, lora_B, scaling: float, bias=None):
    """x2 (M, K) -> y (M, N) = x2 W^T + b + s (x2 A^T) B^T and h (M, r) = x2 A^T. Any strides."""
    M, K = x2.shape
    N, r = weight.shape[0], lora_A.shape[0]
    y = x2.new_empty(M, N)  # (M, d_out)
    h = x2.new_empty(M, r)  # (M, r)
    if M == 0 or N == 0:
        return y, h
    args = (x2, weight, lora_A, lora_B, bias if bias is not None else y, y, h, M, N, K, r, float(scaling),
            *x2.stride(), *weight.stride(), *lora_A.stride(), *lora_B.stride(), *y.stride(), *h.stride())
    flags = dict(HAS_BIAS=bias is not None, PRECISION=dot_precision(x2.dtype),
                 BLOCK_R=max(16, triton.next_power_of_2(r)))
    check_kernel_mode(_lora_kernel, x2.device)
    if x2.device.type != "cuda":  # interpreter: a single tile, no autotuning
        blocks = interpret_blocks(M, N, K)
        grid = (triton.cdiv(M, blocks["BLOCK_M"]) * triton.cdiv(N, blocks["BLOCK_N"]), 1)
        _lora_kernel[grid](*args, **flags, **blocks)
    else:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), 1)  # noqa: E731
        with torch.cuda.device(x2.device):
            _lora_tuned[grid](*args, **flags)
    return y, h


def lora_backward(g2, x2, weight, lora_A, lora_B, h, scaling, needs, has_bias):
    """Returns (d_x2, d_weight, d_A, d_B, d_bias) for 2-D g2 (M, d_out), x2 (M, d_in)."""
    d_x = d_w = d_a = d_b = d_bias = None
    g_b = None  # (M, r) = g B, unscaled
    if needs[0]:  # d_x = g W + s (g B) A: the forward kernel with (W^T, B^T, A^T)
        d_x, g_b = lora_fused(g2, weight.t(), lora_B.t(), lora_A.t(), scaling)
    elif needs[2]:
        g_b = gemm(g2, lora_B.t(), g2.new_empty(g2.shape[0], lora_A.shape[0]))
    if needs[2]:  # d_A = s (g B)^T x: (r, d_in)
        d_a = gemm(g_b.t(), x2.t(), lora_A.new_empty(lora_A.shape), alpha=scaling)
    if needs[3]:  # d_B = s g^T h: (d_out, r)
        d_b = gemm(g2.t(), h.t(), lora_B.new_empty(lora_B.shape), alpha=scaling)
    if needs[1]:  # frozen in LoRA, but supported when someone unfreezes it
        d_w = gemm(g2.t(), x2.t(), weight.new_empty(weight.shape))
    if needs[5] and has_bias:
        d_bias = g2.sum(0, dtype=torch.float32).to(g2.dtype)
    return d_x, d_w, d_a, d_b, d_bias


class LoRALinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, lora_A, lora_B, scaling, bias):
        check_lora(x, weight, lora_A, lora_B, bias)
        x2 = x.reshape(-1, x.shape[-1])  # (M, d_in), M = prod(leading dims)
        y, h = lora_fused(x2, weight, lora_A, lora_B, scaling, bias)
        ctx.save_for_backward(x2, weight, lora_A, lora_B, h)
        ctx.scaling, ctx.has_bias, ctx.x_shape = float(scaling), bias is not None, x.shape
        return y.view(*x.shape[:-1], weight.shape[0])  # (..., d_out)

    @staticmethod
    def backward(ctx, grad_out):
        x2, weight, lora_A, lora_B, h = ctx.saved_tensors
        g2 = grad_out.reshape(-1, grad_out.shape[-1])  # (M, d_out)
        d_x, d_w, d_a, d_b, d_bias = lora_backward(g2, x2, weight, lora_A, lora_B, h, ctx.scaling,
                                                    ctx.needs_input_grad, ctx.has_bias)
        d_x = d_x.view(ctx.x_shape) if d_x is not None else None
        return d_x, d_w, d_a, d_b, None, d_bias
