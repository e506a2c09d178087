"""Attention on the CPU: the plain math where it beats torch's SDPA kernel, and the fast dropout mask.

torch's CPU SDPA runs a flash kernel built for long sequences. At the short ones PEFT jobs
train on, the plain math, softmax(q k^T s + mask) v through two batched matmuls, is faster
(bench/cpu_attention.py, 2 threads, forward + backward): at MiniLM's heads (12 x 32), batch 32,
1.3-1.65x from 30 to 84 positions, 0.88x at 128; at SmolLM2's (9 / 3 x 64, causal), batch 8,
1.03-1.47x from 40 to 128 positions, 0.97x at 192; inference 1.2-2.1x over the same ranges. So
the math runs where the key length is at most `math_up_to(head_dim)`, SDPA elsewhere. The two
agree to float rounding (tests/models/test_cpu_attention.py, values and gradients).

Grouped K/V heads (SmolLM2's 9 query heads on 3) are not copied per query head: a group's query
heads are stacked as rows against their shared head. On a 2-core Intel Xeon (thirty-ninth session)
copying them had made the math 0.76-0.83x of SDPA in training and 0.3-0.4x at one-token decoding;
stacked, it is 1.03-1.13x in training (40-128 positions) and 1.0-1.5x at decoding. There, MiniLM's
shapes are won up to about 60 positions and lost 0.84-0.96x at 64-84: under 1% of a step, so the
one threshold stays.

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
    """The longest key sequence where the math beats SDPA's CPU kernel (forward and backward): 96
    positions at head size 32 (won at 84, lost at 128), 128 at 64 (won at 128, lost at 192); larger
    heads (unmeasured) keep 128."""
    return min(128, max(96, 2 * head_dim))


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
    B, heads, q_len, d = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else d ** -0.5
    # Grouped-query attention: each K/V head serves `groups` consecutive query heads, so the query
    # heads of one group are stacked as extra rows against their shared K/V head instead of copying
    # K and V `groups` times (repeat_interleave cost SmolLM2 0.4-0.8x of SDPA's speed, most at decode).
    q = (query * scale).reshape(B, kv_heads, groups * q_len, d)      # scaling q: n x d multiplies, not n x n
    scores = torch.matmul(q, key.transpose(-1, -2)).view(B, kv_heads, groups, q_len, kv_len)
    mask = attention_mask
    if mask is None and causal and q_len > 1:
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril()
    if mask is not None:
        mask = mask[..., :kv_len]
        if mask.dtype == torch.bool:   # additive: one small (B, 1, q, k) tensor, then an add (faster than a fill)
            mask = torch.zeros(mask.shape, dtype=scores.dtype, device=mask.device).masked_fill_(
                ~mask, torch.finfo(scores.dtype).min)
        if mask.dim() == 4:            # (B or 1, 1 or heads, q, k) against the (B, kv heads, groups, q, k) scores
            mask = mask.unflatten(1, (-1, groups) if mask.shape[1] == heads else (1, 1))
        scores = scores + mask
    scores = scores.view(B, kv_heads, groups * q_len, kv_len)
    probs = (scores.softmax(-1) if scores.dtype == torch.float32
             else torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype))
    probs = fast_dropout(probs, dropout) if dropout > 0.0 else probs
    out = torch.matmul(probs, value).view(B, heads, q_len, d)
    return out.transpose(1, 2).contiguous(), None


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
