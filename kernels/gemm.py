"""Shared tiled GEMM: C[g, s] (+)= alpha * sum_r A[g, r] @ B[g, r]^T (+ bias).

Layer 1 (`_gemm_kernel`) and layer 2 (`gemm`, `interpret_blocks`) of the
Liger-style layout. Every operand is a strided 4-D view, so the callers express
all the fusions as views instead of copies:
  * row offsets (write x's rows at row n_p of the output) -> pass `out[:, n_p:]`;
  * transposes (d_x = g @ W, d_W = g^T @ x) -> pass `.t()` / `.transpose()` views;
  * a shared operand (weight, shared prompt) -> a stride-0 group dim (`expand`);
  * batch reductions (d_W = sum_b g_b^T x_b) -> the R dim, summed in fp32 in-kernel;
  * broadcast stores (shared prompt rows computed once, stored B times) -> the S dim.
Importing this module imports triton: do it lazily (the ops do).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._backend import check_kernel_mode


def _cuda_configs():
    """Candidate tiles (Triton matmul tutorial set); pruned per problem by `_prune`."""
    tiles = [(128, 256, 64, 3, 8), (64, 256, 32, 4, 4), (128, 128, 32, 4, 4), (128, 64, 32, 4, 4),
             (64, 128, 32, 4, 4), (128, 32, 32, 4, 4), (64, 32, 32, 5, 2), (32, 64, 32, 5, 2)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w)
            for m, n, k, s, w in tiles]


def _prune(configs, named_args, **kwargs):
    """Drop tiles much larger than the problem (e.g. M = n_p = 20 rows): they only add masked work."""
    M, N = named_args["M"], named_args["N"]
    cap_m, cap_n = max(32, triton.next_power_of_2(M)), max(32, triton.next_power_of_2(N))
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= cap_m and c.kwargs["BLOCK_N"] <= cap_n]
    return kept or configs[-1:]


def interpret_blocks(M: int, N: int, K: int) -> dict:
    """Single tile for the CPU interpreter, keyed on (M, N, K): autotuning there would run
    every config, and bigger tiles mean fewer Python-level program instances."""
    def cap(d):
        return int(min(64, max(16, triton.next_power_of_2(d))))
    return {"BLOCK_M": cap(M), "BLOCK_N": cap(N), "BLOCK_K": cap(K), "GROUP_M": 8}


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs follow torch's matmul TF32 switch so results match the reference."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


@triton.jit
def tile_ids(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped (swizzled) tile order from the Triton matmul tutorial, for L2 reuse."""
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * grid_n
    first_m = (pid // group) * GROUP_M
    size_m = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % group) % size_m)
    pid_n = (pid % group) // size_m
    return pid_m, pid_n


@triton.jit
def _gemm_kernel(a_ptr, b_ptr, c_ptr, bias_ptr, M, N, K, R, S, alpha,
                 s_ag, s_ar, s_am, s_ak, s_bg, s_br, s_bn, s_bk, s_cg, s_cs, s_cm, s_cn,
                 HAS_BIAS: tl.constexpr, ACCUMULATE: tl.constexpr, PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 GROUP_M: tl.constexpr):
    pid_m, pid_n = tile_ids(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    g = tl.program_id(1).to(tl.int64)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    rm64 = rm.to(tl.int64)  # row offsets can pass 2**31 elements (e.g. M = B * n flattened)
    a_base = a_ptr + g * s_ag
    b_base = b_ptr + g * s_bg
    for r in range(0, R):  # batch reduction, accumulated in fp32 registers
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + rk
            a = tl.load(a_base + rm64[:, None] * s_am + kk[None, :] * s_ak,
                        mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)  # (BLOCK_M, BLOCK_K)
            b = tl.load(b_base + kk[:, None] * s_bk + rn[None, :] * s_bn,
                        mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)  # (BLOCK_K, BLOCK_N)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_base += s_ar  # 64-bit pointer arithmetic, no int32 r * stride product
        b_base += s_br
    acc = acc * alpha
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    c_mask = (rm[:, None] < M) & (rn[None, :] < N)
    c_ptrs = c_ptr + g * s_cg + rm64[:, None] * s_cm + rn[None, :] * s_cn
    for _ in range(0, S):  # broadcast store: one computed tile, S destinations
        out = acc
        if ACCUMULATE:
            out = acc + tl.load(c_ptrs, mask=c_mask, other=0.0).to(tl.float32)
        tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=c_mask)
        c_ptrs += s_cs


# restore_value: autotuning re-runs the kernel, which must not double-count ACCUMULATE.
_gemm_tuned = triton.autotune(configs=_cuda_configs(), key=["M", "N", "K"], restore_value=["c_ptr"],
                              prune_configs_by={"early_config_prune": _prune})(_gemm_kernel)


def _as4d(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 2:
        return t[None, None]  # (1, 1, rows, cols)
    if t.dim() != 4:
        raise ValueError(f"gemm operands must be 2-D or 4-D (G, R|S, rows, cols), got shape {tuple(t.shape)}")
    return t


def gemm(a, b, c, *, bias=None, alpha: float = 1.0, accumulate: bool = False) -> torch.Tensor:
    """c[g, s] (+)= alpha * sum_r a[g, r] @ b[g, r]^T + bias, in place; returns c (as passed).

    a: (G, R, M, K), b: (G, R, N, K), c: (G, S, M, N), or 2-D (G = R = S = 1);
    size-1 G/R dims of a or b broadcast (as stride-0 `expand` views, never copies).
    """
    out = c
    a, b, c = _as4d(a), _as4d(b), _as4d(c)
    G, S, M, N = c.shape
    R, K = max(a.shape[1], b.shape[1]), a.shape[3]
    a, b = a.expand(G, R, M, K), b.expand(G, R, N, K)  # raises on a shape mismatch
    if a.dtype != b.dtype or a.device != b.device or a.device != c.device:
        raise ValueError(f"gemm operands disagree: a {a.dtype}/{a.device}, b {b.dtype}/{b.device}, c {c.device}")
    if bias is not None and bias.shape != (N,):
        raise ValueError(f"bias must have shape ({N},), got {tuple(bias.shape)}")
    if c.numel() == 0:
        return out
    if K == 0 or R == 0:
        a, b = a.new_zeros(G, 1, M, 1), b.new_zeros(G, 1, N, 1)  # empty sum: bias / accumulate only
        R, K = 1, 1
    bias_arg = bias.contiguous() if bias is not None else c  # dummy pointer when HAS_BIAS=False
    args = (a, b, c, bias_arg, M, N, K, R, S, float(alpha), *a.stride(), *b.stride(), *c.stride())
    flags = dict(HAS_BIAS=bias is not None, ACCUMULATE=accumulate, PRECISION=dot_precision(a.dtype))
    _launch(args, flags, G, M, N, K, a.device)
    return out


def _launch(args, flags, G, M, N, K, device):
    check_kernel_mode(_gemm_kernel, device)
    if device.type != "cuda":  # interpreter: one tile, no autotuning
        blocks = interpret_blocks(M, N, K)
        grid = (triton.cdiv(M, blocks["BLOCK_M"]) * triton.cdiv(N, blocks["BLOCK_N"]), G)
        _gemm_kernel[grid](*args, **flags, **blocks)
        return
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), G)  # noqa: E731
    with torch.cuda.device(device):
        _gemm_tuned[grid](*args, **flags)


def linear_into(out, x, weight, bias=None, *, alpha: float = 1.0) -> torch.Tensor:
    """out (B, M, N) = x (B, M, K) @ weight (N, K)^T + bias, written into the (possibly strided) view `out`."""
    B = x.shape[0]
    gemm(x.unsqueeze(1), weight.expand(B, 1, *weight.shape), out.unsqueeze(1), bias=bias, alpha=alpha)
    return out
