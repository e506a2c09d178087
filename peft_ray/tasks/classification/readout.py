"""A pooled classifier reads one row of the last layer: after its attention, compute only that row.

BERT-family sequence classifiers read the last layer's hidden state at position 0 alone
(BertPooler: `hidden[:, 0]`; RoBERTa's head: `features[:, 0, :]`). In that layer every other
row's query, attention-output projection, residual LayerNorm and feed-forward (10 of the layer's
12 h^2 multiply-adds per token) and its row of attention scores feed nothing the loss reads. The
attention still reads every row's key and value, but only through row 0's query and scores, so
where those projections are plain linear maps it reads them through associativity: q . (W x_j)
as (W^T q) . x_j, and sum_j p_j W x_j as W (sum_j p_j x_j), a few dot products per row instead of
two h^2 projections (LoRA and IA3 layers give their map with the adapter folded in, with its
gradient); elsewhere (DoRA, LoRA dropout while training, ZeRO-3) it projects every row. It continues
on row 0: (B, n, h) -> (B, 1, h). On MiniLM (6 layers) that is about 1/6 of the encoder's forward
and backward work per step (bench/first_row.py measures it). Where prefix tuning wraps that self-attention, the wrapper's
own forward runs (all queries; still exact).

Exact: the logits and every gradient are the full layer's (tests/tasks/test_first_row.py, every
method). The last hidden state then has one row, so this is applied only to sequence
classifiers of these families, never where the whole sequence is read (NER, masked-LM
verbalizers). Per instance and explicit: `first_row_readout(model)` swaps one module's
forward; parameter names, saved adapters and HF interop are unchanged.
"""

from __future__ import annotations

import types
from typing import Optional

import torch
from torch import nn

POOLED_ROW0 = {"bert": "bert", "roberta": "roberta"}     # model_type -> the base model's attribute


def last_attention_output(model: nn.Module) -> Optional[nn.Module]:
    """The last layer's attention-output block (dense + residual LayerNorm) of a row-0 classifier."""
    attr = POOLED_ROW0.get(getattr(model.config, "model_type", ""))
    if attr is None or not type(model).__name__.endswith("ForSequenceClassification"):
        return None
    layers = getattr(getattr(getattr(model, attr, None), "encoder", None), "layer", None)
    if not layers:
        return None
    return getattr(getattr(layers[-1], "attention", None), "output", None)


def _row0_forward(self: nn.Module, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
    # (B, n, h) attention output and residual -> (B, 1, h); the feed-forward after it sees row 0 only
    return type(self).forward(self, hidden_states[:, :1], input_tensor[:, :1])


def _row0_self_attention(self: nn.Module, hidden_states: torch.Tensor, attention_mask=None, cache=None, **kwargs):
    """BertSelfAttention.forward (transformers 5) with the query of row 0 alone: (B, n, h) -> (B, 1, h).
    Its keys and values are read through the products' associativity where the projection is a plain
    linear map (`_scores`, `_context`), so no (B, n, h) key or value tensor is made."""
    if cache is not None or kwargs.get("encoder_hidden_states") is not None:
        return type(self).forward(self, hidden_states, attention_mask, cache=cache, **kwargs)
    b, d = hidden_states.shape[0], self.attention_head_size
    query = self.query(hidden_states[:, :1]).view(b, -1, 1, d)                   # (B, H, 1, d)
    scores = _scores(self.key, query, hidden_states) * self.scaling               # (B, H, 1, n)
    if isinstance(attention_mask, torch.Tensor):
        mask = attention_mask[:, :, :1] if attention_mask.dim() == 4 else attention_mask
        scores = (scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool
                  else scores + mask)
    probs = self.dropout(torch.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype))
    return _context(self.value, probs, hidden_states).reshape(b, 1, -1), None


def _linear_map(module: nn.Module):
    """(W, b) with module(x) = x W^T + b: a plain nn.Linear, or an adapter layer that says it is one
    now (`linear_map`: LoRA without DoRA or training dropout, IA3). None elsewhere, and under ZeRO-3
    (`ds_id`), where a module's weight is only gathered around its own forward."""
    if type(module) is nn.Linear:
        return None if hasattr(module.weight, "ds_id") else (module.weight, module.bias)
    own = getattr(module, "linear_map", None)
    return own() if callable(own) else None


def _scores(key: nn.Module, query: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """q . k_j for every row j: (B, H, 1, d) queries, (B, n, D) hidden states -> (B, H, 1, n). For a
    plain linear key, q . (W_h x_j + b_h) = (W_h^T q) . x_j + q . b_h: one (d x D) product per head
    and batch row, then H dot products per row, instead of the (n x D x D) key projection."""
    b, heads, _, d = query.shape
    linear = _linear_map(key)
    if linear is None:
        k = key(h).view(b, h.shape[1], heads, d).transpose(1, 2)                 # (B, H, n, d)
        return query @ k.transpose(-1, -2)
    weight, bias = linear
    read = torch.einsum("bhd,hdD->bhD", query[:, :, 0], weight.view(heads, d, -1))   # (B, H, D)
    scores = (read @ h.transpose(1, 2)).unsqueeze(2)                             # (B, H, 1, n)
    if bias is not None:
        scores = scores + (query * bias.view(heads, 1, d)).sum(-1, keepdim=True)
    return scores


def _context(value: nn.Module, probs: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """sum_j p_j v_j: (B, H, 1, n) probabilities -> (B, H, d). For a plain linear value,
    sum_j p_j (W_h x_j + b_h) = W_h (sum_j p_j x_j) + (sum_j p_j) b_h, where the sum of p_j is 1
    unless dropout dropped some of them."""
    b, heads = probs.shape[:2]
    linear = _linear_map(value)
    if linear is None:
        v = value(h).view(b, h.shape[1], heads, -1).transpose(1, 2)              # (B, H, n, d)
        return (probs @ v)[:, :, 0]
    weight, bias = linear
    mixed = probs[:, :, 0] @ h                                                   # (B, H, D)
    out = torch.einsum("bhD,hdD->bhd", mixed, weight.view(heads, -1, h.shape[-1]))
    if bias is not None:
        out = out + probs.sum(-1) * bias.view(heads, -1)
    return out


def first_row_readout(model: nn.Module) -> bool:
    """Make `model`'s last layer compute row 0 only after its attention; False where not exact."""
    block = last_attention_output(model)
    if block is None:
        return False
    block.forward = types.MethodType(_row0_forward, block)
    attn = _last_self_attention(model)
    if attn is not None:
        attn.forward = types.MethodType(_row0_self_attention, attn)
    return True


def _last_self_attention(model: nn.Module) -> Optional[nn.Module]:
    """The last layer's own BERT/RoBERTa self-attention, whose forward _row0_self_attention restates."""
    attr = POOLED_ROW0[model.config.model_type]
    attn = getattr(getattr(getattr(model, attr).encoder.layer[-1], "attention", None), "self", None)
    known = type(attn).__name__ in ("BertSelfAttention", "RobertaSelfAttention")
    if not known or getattr(attn, "is_cross_attention", False) or getattr(attn, "is_decoder", False):
        return None
    return attn
