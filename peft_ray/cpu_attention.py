"""Attention on the CPU: the plain math where it beats torch's SDPA kernel, and the fast dropout mask.

torch's CPU SDPA runs a flash kernel built for long sequences. At the short ones PEFT jobs
train on, the plain math, softmax(q k^T s + mask) v through two batched matmuls, is faster:
forward + backward at MiniLM's heads (12 x 32), batch 32, 2 threads, 1.7-2.3x at 30-46
positions and even at 84; at SmolLM2's (9 x 64) 1.4-1.6x up to 128 positions; past that SDPA
wins, 2.5x at 256 positions (BENCHMARKS.md, twenty-second session). So the math runs where the
key length is at most `math_up_to(head_dim)`, SDPA elsewhere. The two agree to float rounding
(tests/models/test_cpu_attention.py, values and gradients).

With attention dropout on, the math always runs: SDPA then takes its own math path with torch's
slow mask (7x SDPA without dropout at MiniLM's shapes), where this one drops probabilities with
fast_dropout's mask.

Per instance and explicit: `use_cpu_attention(model)` gives the attention modules of the known
families a shallow copy of their config naming this function; the model's own config, and so
its mask creation and saved config, stay "sdpa". GPU training keeps SDPA.
"""

from __future__ import annotations

import copy

import torch

from peft_ray.fast_dropout import dropout as fast_dropout

NAME = "peft_ray_cpu"        # the attention-function name registered with transformers
# Families whose attention calls the attention interface with (q, k, v, mask, dropout, scaling) and
# nothing the math below would drop (T5's position bias, softcapping, sinks go to SDPA anyway).
FAMILIES = ("bert", "roberta", "llama", "mistral", "qwen2", "gpt2")
_UNSUPPORTED = ("position_bias", "softcap", "s_aux", "sinks")


def math_up_to(head_dim: int) -> int:
    """The longest key sequence where the math beats SDPA's CPU kernel (forward and backward), with
    margin: 64 positions at head size 32 (measured even at 84), 128 at 64 (measured 1.4x at 128)."""
    return max(64, 2 * head_dim)


def _use_math(query, key, attention_mask, p: float, causal: bool, kwargs) -> bool:
    if query.device.type != "cpu" or any(kwargs.get(k) is not None for k in _UNSUPPORTED):
        return False
    q_len, kv_len = query.shape[2], key.shape[2]
    if attention_mask is None and causal and 1 < q_len < kv_len:
        return False          # SDPA aligns that causal pattern its own way (a static-cache prefill): keep its answer
    return p > 0.0 or kv_len <= math_up_to(query.shape[-1])


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None,
              **kwargs):
    """transformers' attention-function signature: softmax(q k^T s + mask) v with the fast dropout mask
    where `_use_math` says so, transformers' own SDPA function otherwise."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    if not _use_math(query, key, attention_mask, dropout, causal, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:   # grouped-query attention: each K/V head serves `groups` query heads
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    q_len, kv_len = query.shape[2], key.shape[2]
    scores = torch.matmul(query, key.transpose(-1, -2)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    mask = attention_mask
    if mask is None and causal and q_len > 1:
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril()
    if mask is not None:
        mask = mask[..., :kv_len]
        scores = (scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool
                  else scores + mask)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = fast_dropout(probs, dropout) if dropout > 0.0 else probs
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def use_cpu_attention(model: torch.nn.Module) -> int:
    """The attention modules of `model` in FAMILIES that use SDPA call `attention` instead; returns how
    many. Idempotent; module names, hooks and state dicts are unchanged."""
    attn = [m for m in model.modules() if type(m).__name__.endswith("Attention")
            and getattr(getattr(m, "config", None), "_attn_implementation", None) == "sdpa"
            and getattr(m.config, "model_type", None) in FAMILIES]
    if attn:
        from transformers.modeling_utils import AttentionInterface

        AttentionInterface.register(NAME, attention)
        configs = {}
        for m in attn:     # one shallow copy per distinct config: only these modules read the new name
            if id(m.config) not in configs:
                configs[id(m.config)] = copy.copy(m.config)
                configs[id(m.config)]._attn_implementation = NAME
            m.config = configs[id(m.config)]
    return len(attn)
