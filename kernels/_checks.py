"""Shape / dtype / device validation for the launchers (triton-free, so cheap to import)."""
from __future__ import annotations

import torch

from ._backend import SUPPORTED_DTYPES


def check_same(**tensors) -> None:
    """All given tensors (None skipped) share one supported dtype and one device."""
    given = {k: t for k, t in tensors.items() if t is not None}
    first_name, first = next(iter(given.items()))
    if first.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{first_name}.dtype={first.dtype} is not supported; use one of {SUPPORTED_DTYPES}")
    for name, t in given.items():
        if t.dtype != first.dtype or t.device != first.device:
            raise TypeError(f"{name} is {t.dtype} on {t.device}, but {first_name} is {first.dtype} on {first.device}")


def check_weight_bias(weight, bias, d_in: int) -> None:
    if weight.dim() != 2 or weight.shape[1] != d_in:
        raise ValueError(f"weight must be (d_out, {d_in}), got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")


def check_rows(name: str, rows, x, width: int) -> None:
    """rows: (n_p, width) shared or (B, n_p, width) per sample, with x: (B, n, d_in)."""
    if x.dim() != 3:
        raise ValueError(f"x must be (B, n, d_in), got {tuple(x.shape)}")
    if rows.dim() not in (2, 3) or rows.shape[-1] != width:
        raise ValueError(f"{name} must be (n_p, {width}) or (B, n_p, {width}), got {tuple(rows.shape)}")
    if rows.dim() == 3 and rows.shape[0] != x.shape[0]:
        raise ValueError(f"per-sample {name} has batch {rows.shape[0]} but x has batch {x.shape[0]}")


def check_prompt_concat(prompt, x, weight, bias) -> None:
    check_rows("prompt", prompt, x, x.shape[-1])
    check_weight_bias(weight, bias, x.shape[-1])
    check_same(x=x, prompt=prompt, weight=weight, bias=bias)


def check_prefix_concat(prefix, x, weight, bias) -> None:
    check_rows("prefix", prefix, x, weight.shape[0] if weight.dim() == 2 else -1)
    check_weight_bias(weight, bias, x.shape[-1])
    check_same(x=x, prefix=prefix, weight=weight, bias=bias)


def check_lora(x, weight, lora_A, lora_B, bias) -> None:
    if x.dim() < 1:
        raise ValueError("x must have a last dim d_in")
    check_weight_bias(weight, bias, x.shape[-1])
    r = lora_A.shape[0] if lora_A.dim() == 2 else -1
    if lora_A.dim() != 2 or lora_A.shape[1] != x.shape[-1]:
        raise ValueError(f"lora_A must be (r, {x.shape[-1]}), got {tuple(lora_A.shape)}")
    if tuple(lora_B.shape) != (weight.shape[0], r):
        raise ValueError(f"lora_B must be ({weight.shape[0]}, {r}), got {tuple(lora_B.shape)}")
    check_same(x=x, weight=weight, lora_A=lora_A, lora_B=lora_B, bias=bias)
