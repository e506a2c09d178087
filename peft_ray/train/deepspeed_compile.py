"""Defer the torch.compile that DeepSpeed's Muon module runs when it is imported.

DeepSpeed 0.19 decorates three Muon functions with ``torch.compile`` at import time
(``deepspeed/runtime/zero/muon/original_muon.py``, through ``deepspeed.runtime.compiler.compile``)
and imports that module for every ZeRO engine, whichever optimizer the job uses: in its ZeRO
optimizer check, in stage 3's constructor and in stage 1/2's gradient path. Wrapping a function
in ``torch.compile`` imports torch._inductor's compiler machinery: 1.0 s of a one-process
engine set-up here, more in each Ray worker while both import at once. peft-ray passes torch's
AdamW and never runs Muon, so the wrapping waits for the first call: the same functions, and
the same compiled code for anyone who does call them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

_MARK = "_peft_ray_deferred_compile"


def lazy_compile() -> Callable[..., Any]:
    """Stands in for ``deepspeed.runtime.compiler.compile()``: a decorator used like
    ``torch.compile`` (bare or with options) that compiles on the first call."""

    def decorator(fn: Optional[Callable] = None, **options: Any):
        if fn is None:
            return functools.partial(decorator, **options)
        compiled: Optional[Callable] = None

        @functools.wraps(fn)
        def call(*args, **kwargs):
            nonlocal compiled
            if compiled is None:
                import torch

                compiled = torch.compile(fn, **options)
            return compiled(*args, **kwargs)

        setattr(call, _MARK, True)
        return call

    return decorator


def defer_deepspeed_compile() -> None:
    """Install lazy_compile before DeepSpeed imports its Muon module (idempotent). A DeepSpeed
    without ``runtime.compiler.compile``, or one whose Muon module is already imported, is left
    as it is: this only saves time, it changes no result."""
    try:
        from deepspeed.runtime import compiler
    except ImportError:
        return
    if callable(getattr(compiler, "compile", None)):
        compiler.compile = lazy_compile


def is_deferred(fn: Callable) -> bool:
    return bool(getattr(fn, _MARK, False))
