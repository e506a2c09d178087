"""Dropout for CPU training with a cheaper random mask than torch's.

On the CPU, `nn.functional.dropout` draws its Bernoulli mask one element at a time from
torch's mt19937 generator: 2.7 ms forward + backward for one (32, 25, 384) MiniLM activation
at 2 threads (1.4 ms here, 0.5 ms of it the mask), 13 such calls a step plus the attention
probabilities; with MiniLM's 0.1 dropout on, a LoRA step took 303 ms against 233 ms with it
off, and 278 ms with this module (bench/fast_dropout.py, BENCHMARKS.md). Here the mask
comes from numpy's PCG64 `random_raw`, 64 bits at a time, compared as four 16-bit integers:
keep with probability 1 - p', where p' is p rounded to a multiple of 2**-16 (0.1 -> 0.1000061),
and scale the kept values by 1 / (1 - p'), so the expectation is still exactly the input. A
64-bit draw per element pair (32-bit thresholds, p realised to 2**-32) took twice the generator
time for a difference in p no training run can see (BENCHMARKS.md, thirteenth session); both
are about 5x faster than torch's mt19937 mask. For float32 activations the mask is a float
tensor holding exactly 0 or the scale (`scaled_keep_mask`), so neither multiply goes through
torch's float copy of a bool tensor; outputs and gradients are bitwise those of the bool mask.
The mask is seeded from torch's default generator, so `torch.manual_seed` (and a checkpoint's
saved RNG state) still makes a run reproducible; the random stream itself differs from torch's.

`FastDropout` subclasses nn.Dropout (same `p`, no state), so code that reads `.p` and state
dicts see no difference. Self-attention hands its `.p` to the attention function, so the
attention probabilities get this mask through cpu_attention.py. GPU training keeps torch's
dropout, whose Philox generator is already cheap there.
"""

from __future__ import annotations


import numpy as np
import torch

_BITS = 16
_LEVELS = 2 ** _BITS


def _drop_level(p: float) -> int:
    """How many of the 2**16 draws drop: round(p * 2**16), kept within 1 .. 2**16 - 1 for 0 < p < 1
    (so a tiny p still drops sometimes and a p near 1 keeps sometimes)."""
    return min(max(round(p * _LEVELS), 1), _LEVELS - 1)


def realised_p(p: float) -> float:
    """The drop probability the mask has for a requested 0 < p < 1: p to the nearest 2**-16."""
    return _drop_level(p) / _LEVELS


def _draws(shape: torch.Size) -> torch.Tensor:
    """int16 draws of `shape`, uniform over [-2**15, 2**15), from one PCG64 stream seeded by torch."""
    n = int(np.prod(shape)) if len(shape) else 1
    seed = int(torch.randint(0, 2 ** 62, (1,)).item())
    return torch.from_numpy(np.random.PCG64(seed).random_raw((n + 3) // 4).view(np.int16)[:n]).view(shape)


def _threshold(p: float) -> int:
    return -(_LEVELS // 2) + _drop_level(p)   # a draw below it drops: probability realised_p(p)


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool tensor, True with probability 1 - realised_p(p)."""
    return _draws(shape) >= _threshold(p)


def scaled_keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """The same draw as a float32 tensor of exactly 0.0 (dropped) and float32(1 / (1 - realised_p(p)))
    (kept), made by float arithmetic: torch multiplies by a bool tensor through a float copy of it
    (0.2 ms at (32, 26, 384) against 0.03 for a float multiply), and this mask costs about what
    that copy did while the backward then needs no copy at all."""
    scale = 1.0 / (1.0 - realised_p(p))
    # draw - threshold + 0.5 is >= 0.5 where kept and <= -0.5 where dropped (exact in float32 for
    # int16 draws): clamped to [0, 0.5] and times 2 * scale, exactly {0, scale} (a power-of-2 product).
    return _draws(shape).float().sub_(_threshold(p) - 0.5).clamp_(0.0, 0.5).mul_(2.0 * scale)


class _Dropout(torch.autograd.Function):
    """x * mask forward, grad * mask backward. Float32 inputs take the float mask, which carries the
    scale (4 bytes an element kept for backward, against 1 for a bool); other dtypes the bool mask
    and a multiply by the scale in their own precision, as nn.Dropout computes."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        if x.dtype == torch.float32:
            mask, ctx.scale = scaled_keep_mask(x.shape, p), None
        else:
            mask, ctx.scale = keep_mask(x.shape, p), 1.0 / (1.0 - realised_p(p))
        ctx.save_for_backward(mask)
        return _masked(x, mask, ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return _masked(grad, mask, ctx.scale), None


def _masked(t: torch.Tensor, mask: torch.Tensor, scale) -> torch.Tensor:
    out = t.mul(mask)
    return out if scale is None else out.mul_(scale)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return _Dropout.apply(x, p)


class FastDropout(torch.nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace or x.device.type != "cpu":
            return super().forward(x)
        return dropout(x, self.p, self.training)


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Every nn.Dropout of `model` (base, adapters, heads) becomes a FastDropout with the same p; returns
    how many. Classes are swapped in place, so module names, hooks and state dicts are unchanged. (The
    attention probabilities' dropout is cpu_attention's.)"""
    n = 0
    for m in model.modules():
        if type(m) is torch.nn.Dropout:
            m.__class__ = FastDropout
            n += 1
    return n
