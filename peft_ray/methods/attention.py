"""Prefix injection at the attention level: every wrapped self-attention computes

    K = [P_k; x W_k + b_k],  V = [P_v; x W_v + b_v]      (peft_ray_kernels.ops)

and attends over n_p extra key positions that every query may see. This works on
encoders (BERT), where HF PEFT 0.21's cache-based prefix tuning is refused under
transformers 5, and it matches PEFT's numerics where PEFT works (GPT-2, Llama, T5),
because PEFT's prefix is a pre-filled KV cache: cached keys are never rotated again,
so RoPE is applied to the x rows only; the x tokens sit at positions n_p.. (the
caller passes shifted position_ids); T5's decoder bias uses query positions n_p...

One forward function per family re-states the HF attention forward of
transformers 5 with the K/V projections swapped for the fused op; the rest (the
attention kernel, GQA, dropout, output projection) is HF's own code path.
"""

from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from peft_ray_kernels import ops
from peft_ray.errors import SpecError
from peft_ray.methods.targets import replace_module


class PrefixAttention(nn.Module):
    """Wraps one self-attention module; `prefix` is set by the model for one forward."""

    # One ZeRO-3 fetch for the whole attention: the forward reads the projections' weights directly.
    _z3_leaf = True

    def __init__(self, attn: nn.Module, family: str, backend: str):
        super().__init__()
        self.attn = attn
        self.family = family
        self.backend = backend
        self.adapter_enabled = True
        self.prefix: Optional[Tuple[torch.Tensor, torch.Tensor]] = None   # (n_p, kv_dim) each

    def forward(self, *args, **kwargs):
        if not self.adapter_enabled or self.prefix is None:
            return self.attn(*args, **kwargs)
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            raise NotImplementedError("prefix tuning with a KV cache (generation) is not supported yet")
        return FORWARDS[self.family](self, *args, **kwargs)

    def kv(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], which: int, head_dim: int):
        """(B, n, d_in) -> (B, h_kv, n_p + n, head_dim): the prefix rows, then x's projection."""
        out = ops.prefix_concat_linear(self.prefix[which].to(x.dtype), x, weight, bias, backend=self.backend)
        return heads(out, head_dim)

    @property
    def n_p(self) -> int:
        return self.prefix[0].shape[0]


def heads(t: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, L, h * hd) -> (B, h, L, hd)."""
    return t.view(t.shape[0], t.shape[1], -1, head_dim).transpose(1, 2)


def extend_mask(mask: Optional[torch.Tensor], n_p: int, q_len: int, causal: bool, impl: str,
                like: torch.Tensor) -> Optional[torch.Tensor]:
    """Add n_p always-visible key columns in front of a 4D mask (bool: True = attend; float: additive)."""
    if mask is None:
        if not causal:
            return None
        # SDPA got no mask because the causal flag sufficed; with n_p more keys it no longer does.
        i = torch.arange(q_len, device=like.device)[:, None]
        j = torch.arange(n_p + q_len, device=like.device)[None, :]
        mask = (j < n_p) | (j - n_p <= i)                                       # (q, n_p + q)
        if impl == "sdpa":
            return mask[None, None]
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(
            ~mask, torch.finfo(like.dtype).min)[None, None]
    if not isinstance(mask, torch.Tensor):
        raise SpecError(f"prefix tuning supports the sdpa and eager attention implementations, not {impl}")
    pad = (torch.ones if mask.dtype == torch.bool else torch.zeros)(
        *mask.shape[:-1], n_p, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


def interface(attn: nn.Module) -> Callable:
    """The attention kernel HF would call here (sdpa, eager, ...), with the family's own eager."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = sys.modules[type(attn).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager)


def bert_forward(w: PrefixAttention, hidden_states, attention_mask=None, encoder_hidden_states=None,
                 cache=None, **kwargs):
    a, (B, n, _) = w.attn, hidden_states.shape
    if encoder_hidden_states is not None:
        raise NotImplementedError("prefix tuning wraps self-attention only")
    hd = a.attention_head_size
    q = heads(a.query(hidden_states), hd)                                       # (B, H, n, hd)
    k = w.kv(hidden_states, a.key.weight, a.key.bias, 0, hd)                    # (B, H, n_p + n, hd)
    v = w.kv(hidden_states, a.value.weight, a.value.bias, 1, hd)
    mask = extend_mask(attention_mask, w.n_p, n, a.is_causal, a.config._attn_implementation, q)
    out, weights = interface(a)(a, q, k, v, mask, dropout=a.dropout.p if a.training else 0.0,
                                scaling=a.scaling, **kwargs)
    return out.reshape(B, n, -1).contiguous(), weights


def gpt2_forward(w: PrefixAttention, hidden_states, cache=None, attention_mask=None,
                 encoder_hidden_states=None, **kwargs):
    a, (B, n, _) = w.attn, hidden_states.shape
    if encoder_hidden_states is not None:
        raise NotImplementedError("prefix tuning wraps self-attention only")
    d, hd = a.split_size, a.head_dim
    W, b = a.c_attn.weight, a.c_attn.bias                                       # Conv1D: W is (d_in, 3d)
    q = heads(F.linear(hidden_states, W[:, :d].t(), b[:d]), hd)
    k = w.kv(hidden_states, W[:, d:2 * d].t(), b[d:2 * d], 0, hd)
    v = w.kv(hidden_states, W[:, 2 * d:].t(), b[2 * d:], 1, hd)
    impl = a.config._attn_implementation
    mask = extend_mask(attention_mask, w.n_p, n, True, impl, q)
    if impl == "eager" and a.reorder_and_upcast_attn:
        out, weights = a._upcast_and_reordered_attn(q, k, v, mask)
    else:
        out, weights = interface(a)(a, q, k, v, mask, dropout=a.attn_dropout.p if a.training else 0.0,
                                    scaling=a.scaling, **kwargs)
    out = a.resid_dropout(a.c_proj(out.reshape(B, n, -1).contiguous()))
    return out, weights


def llama_forward(w: PrefixAttention, hidden_states, position_embeddings=None, attention_mask=None,
                  cache=None, **kwargs):
    a, (B, n, _) = w.attn, hidden_states.shape
    hd, n_p = a.head_dim, w.n_p
    q = heads(a.q_proj(hidden_states), hd)                                      # (B, H, n, hd)
    k = w.kv(hidden_states, a.k_proj.weight, a.k_proj.bias, 0, hd)              # (B, H_kv, n_p + n, hd)
    v = w.kv(hidden_states, a.v_proj.weight, a.v_proj.bias, 1, hd)
    rope = sys.modules[type(a).__module__].apply_rotary_pos_emb
    cos, sin = position_embeddings                                              # for x's positions n_p..
    q, k_x = rope(q, k[:, :, n_p:], cos, sin)
    k = torch.cat([k[:, :, :n_p], k_x], dim=2)                                  # prefix keys stay unrotated
    mask = extend_mask(attention_mask, n_p, n, True, a.config._attn_implementation, q)
    out, weights = interface(a)(a, q, k, v, mask, dropout=a.attention_dropout if a.training else 0.0,
                                scaling=a.scaling, **kwargs)
    return a.o_proj(out.reshape(B, n, -1).contiguous()), weights


def t5_forward(w: PrefixAttention, hidden_states, mask=None, key_value_states=None, position_bias=None,
               cache=None, **kwargs):
    a, (B, n, _) = w.attn, hidden_states.shape
    if key_value_states is not None:
        raise NotImplementedError("prefix tuning wraps self-attention only")
    hd, n_p = a.key_value_proj_dim, w.n_p
    q = heads(a.q(hidden_states), hd)
    k = w.kv(hidden_states, a.k.weight, None, 0, hd)
    v = w.kv(hidden_states, a.v.weight, None, 1, hd)
    if position_bias is None:  # block 0 computes it (queries at n_p.., as after a cache of n_p), later blocks reuse
        if a.has_relative_attention_bias:
            position_bias = a.compute_bias(n, n_p + n, device=q.device, past_seen_tokens=n_p)
        else:
            position_bias = torch.zeros((1, a.n_heads, n, n_p + n), device=q.device, dtype=q.dtype)
    mask = extend_mask(mask, n_p, n, a.is_causal, a.config._attn_implementation, q)
    out, weights = interface(a)(a, q, k, v, mask, dropout=a.dropout if a.training else 0.0,
                                scaling=a.scaling, position_bias=position_bias, **kwargs)
    return a.o(out.reshape(B, n, -1).contiguous()), position_bias, weights


FORWARDS: Dict[str, Callable] = {"bert": bert_forward, "gpt2": gpt2_forward, "llama": llama_forward,
                                 "t5": t5_forward}


def self_attention_paths(model: nn.Module) -> List[str]:
    """The self-attention modules that get a prefix, in layer order (PEFT's layer index)."""
    family = model.config.model_type
    if family not in FORWARDS:
        raise SpecError(f"method.name: prefix_tuning supports model types {sorted(FORWARDS)}, not '{family}'")
    kind = {"bert": "BertSelfAttention", "gpt2": "GPT2Attention", "llama": "LlamaAttention",
            "t5": "T5Attention"}[family]
    paths = [p for p, m in model.named_modules() if type(m).__name__ == kind]
    if family == "gpt2":
        paths = [p for p in paths if not p.endswith("crossattention")]
    if family == "t5":  # PEFT passes the cache to the decoder only: its self-attention gets the prefix
        paths = [p for p in paths if ".decoder." in f".{p}" and p.endswith("layer.0.SelfAttention")]
    return paths


def wrap_self_attention(model: nn.Module, backend: str) -> List[PrefixAttention]:
    wrapped = []
    for path in self_attention_paths(model):
        w = PrefixAttention(model.get_submodule(path), model.config.model_type, backend)
        replace_module(model, path, w)
        wrapped.append(w)
    return wrapped
