"""Frozen linear products on the CPU through oneDNN's matmul instead of torch's BLAS call.

A frozen projection's product, x W^T + b forward and g W for the input's gradient, is most of a
PEFT step on the CPU (85% of a MiniLM prompt-tuning step, BENCHMARKS.md "Where a step's time
goes"). torch computes it with `addmm` (MKL's sgemm, after copying the bias into the output);
oneDNN, which torch ships and which its inductor uses for the same products, adds the bias inside
its kernel and blocks for the machine it runs on. `bench/cpu_linear.py` times both at the jobs'
shapes and over whole steps; they agree to float rounding (tests/models/test_cpu_linear.py and
the eager ops' tests: values and gradients).

Frozen only: a trained weight needs its own gradient, which this does not compute, so a product
whose weight or bias trains keeps torch's op, and so do GPU tensors, other dtypes and ZeRO-3's
partitioned weights (gathered only around their module's forward). Importing this module changes
nothing; callers ask for it per product (`linear`, `product`).
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch
import torch.nn.functional as F

_off = 0   # > 0 inside `off()`


def supported() -> bool:
    """Whether this torch has oneDNN's linear at all."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def available() -> bool:
    """Whether frozen products go through oneDNN now. `PEFT_RAY_ONEDNN=1` or `=0` decides; unset, it
    is on where it was measured faster than torch's own product (MKL's sgemm): on AMD CPUs (Zen 4:
    1.09-1.11x a step), not on Intel's, where MKL picks its own best kernels (a 2-core Xeon with
    AVX-512 and AMX: MKL 1.14-1.16x a prompt-tuning step), nor on CPUs never measured."""
    if _off or not supported():
        return False
    choice = os.environ.get("PEFT_RAY_ONEDNN", "")
    if choice in ("0", "1"):
        return choice == "1"
    return cpu_vendor() == "AuthenticAMD"


@functools.lru_cache(maxsize=None)
def cpu_vendor() -> str:
    """x86's vendor_id ("AuthenticAMD", "GenuineIntel"); "" where /proc/cpuinfo does not say it."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


@contextlib.contextmanager
def off():
    """torch's own products inside the block (the A/B of bench/cpu_linear.py)."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


def fits(x: torch.Tensor, weight: torch.Tensor, bias=None) -> bool:
    """oneDNN's fp32 path for a frozen weight that is whole on this rank (not under CPU autocast,
    whose cast to a lower precision is torch's op's to make)."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.dim() >= 2
            and not weight.requires_grad and weight.dim() == 2 and not hasattr(weight, "ds_id")
            and (bias is None or not bias.requires_grad) and available() and not torch.is_autocast_enabled("cpu"))


def product(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """x W^T + b, no autograd: where `fits`, oneDNN's; W may be a transposed view (g W = g (W^T)^T)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _FrozenLinear(torch.autograd.Function):
    """x W^T + b with the input's gradient only (W and b are frozen)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        return product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return product(grad.contiguous(), weight.t()), None, None


def linear(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """F.linear(x, weight, bias), through oneDNN where `fits` says so."""
    if not fits(x, weight, bias):
        return F.linear(x, weight, bias)
    if x.requires_grad and torch.is_grad_enabled():
        return _FrozenLinear.apply(x, weight, bias)
    return product(x, weight, bias)
