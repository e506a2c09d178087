"""Backend resolution for the fused ops: "auto" | "torch" | "triton".

Nothing here imports triton at module load; importing `peft_ray_kernels.ops` must work on a
machine without triton, where backend="torch" (and "auto" on CPU) still run.
"""
from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "triton")
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_installed() -> bool:
    """True when the `triton` package can be imported (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpret_mode() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map the user's choice to "torch" or "triton"; raise if Triton cannot run here."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not valid; allowed values: {', '.join(BACKENDS)}")
    if backend == "torch":
        return "torch"
    if backend == "auto":
        # On CPU the interpreter is a correctness tool (orders of magnitude slower
        # than ATen), so "auto" never picks it.
        return "triton" if device.type == "cuda" and triton_installed() else "torch"
    check_triton_usable(device)
    return "triton"


def check_triton_usable(device: torch.device) -> None:
    """Raise a RuntimeError that says how to fix it when backend="triton" cannot run."""
    if not triton_installed():
        raise RuntimeError('backend="triton" needs the `triton` package; install it or use backend="torch".')
    if device.type != "cuda" and not interpret_mode():
        raise RuntimeError(
            f'backend="triton" on {device.type} tensors needs the Triton interpreter: set the '
            "environment variable TRITON_INTERPRET=1 before triton is imported, or use "
            'backend="torch" (or "auto").'
        )


def check_kernel_mode(kernel, device: torch.device) -> None:
    """Catch TRITON_INTERPRET being set only after the kernels were already jit-decorated."""
    interpreted = type(kernel).__name__ == "InterpretedFunction"
    if device.type != "cuda" and not interpreted:
        raise RuntimeError(
            "Triton kernels were compiled for the GPU because TRITON_INTERPRET=1 was set after "
            'kernels were imported; set it before importing triton/kernels, or use backend="torch".'
        )
