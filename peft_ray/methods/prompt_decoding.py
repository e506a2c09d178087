"""KV-cache decoding for the input-prepending methods (prompt tuning, P-tuning).

Decoding's fast path (tasks/generation/decoding._cached) left-pads the prompts, runs them
once with `use_cache=True` and then feeds one token per row against HF's cache. The prepending
methods make that exact with two changes, both on the model side:

- the first call seeds the cache with the soft prompt's per-layer K/V, computed once as a batch
  of one (causal_cache.prompt_pass) and expanded to B rows: the prompt rows attend only to
  earlier prompt rows, so they are the same for every sequence;
- every call gets n_p leading ones in the attention mask and positions shifted by n_p.

A row's real tokens then sit at positions n_p.. after [P], attend to P and to their own
earlier tokens, never to the left padding: the forward the full re-run computes on the
right-padded [P; x] (tests/tasks/test_decoding_cache.py checks the picked tokens). Each new
token costs one row per layer instead of a re-run over (n_p + n) rows with (B, n, V) logits:
on Multi30k-length replies (48 tokens) that is the difference between hours and minutes.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from peft_ray.methods.causal_cache import EXACT_ATTENTION, LM_HEADS
from peft_ray.methods.causal_cache import expand_cache, prompt_pass, supports_cache


def decodes_with_cache(base: nn.Module) -> bool:
    """A causal LM (not a classifier) of a family the prompt cache is exact for."""
    return (supports_cache(base) and type(base).__name__.endswith(LM_HEADS)
            and base.config._attn_implementation in EXACT_ATTENTION)


def is_decode_call(base: nn.Module, kw: Dict[str, Any]) -> bool:
    """A decoding call (use_cache asked for, in eval) that this path can serve."""
    return bool(kw.get("use_cache")) and not base.training and decodes_with_cache(base)


def decode_forward(base: nn.Module, prompt_fn: Callable[[], torch.Tensor], input_ids: torch.Tensor,
                   attention_mask: Optional[torch.Tensor], kw: Dict[str, Any]):
    """One decoding forward: the prompt (from `prompt_fn`, (n_p, d), called on the first call only)
    seeds the cache, then the inputs run at positions shifted by n_p against it."""
    kw = dict(kw)
    cache = kw.pop("cache", None)
    if cache is None:
        cache = kw.pop("past_key_values", None)
    B, n = input_ids.shape
    if attention_mask is None:
        if cache is not None:
            raise ValueError("decoding against a cache needs the attention mask of every token so far")
        attention_mask = input_ids.new_ones(B, n)
    pos = kw.pop("position_ids", None)
    if pos is None:  # left padding: a token's position counts the real tokens before it
        pos = (attention_mask.cumsum(-1)[:, -n:] - 1).clamp(min=0)
    if cache is None:
        prompt = prompt_fn()
        cache = expand_cache(prompt_pass(base, prompt.to(base.get_input_embeddings().weight.dtype), None).cache, B)
    n_p = cache.get_seq_length() - (attention_mask.shape[1] - n)   # prompt rows held by the cache
    mask = torch.cat([attention_mask.new_ones(B, n_p), attention_mask], dim=1)
    return base(input_ids=input_ids, attention_mask=mask, position_ids=pos + n_p, cache=cache, **kw)
