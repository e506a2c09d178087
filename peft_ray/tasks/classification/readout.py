"""A pooled classifier reads one row of the last layer: after its attention, compute only that row.

BERT-family sequence classifiers read the last layer's hidden state at position 0 alone
(BertPooler: `hidden[:, 0]`; RoBERTa's head: `features[:, 0, :]`). In that layer every other
row's query, attention-output projection, residual LayerNorm and feed-forward (10 of the layer's
12 h^2 multiply-adds per token) and its row of attention scores feed nothing the loss reads. The
attention still needs every row's keys and values, so the layer computes those for all rows,
the query and the attention for row 0 alone, and continues on row 0: (B, n, h) -> (B, 1, h).
On MiniLM (6 layers) that is about 1/7 of the encoder's forward and backward work per step
(bench/first_row.py measures it). Where prefix tuning wraps that self-attention, the wrapper's
own forward runs (all queries; still exact).

Exact: the logits and every gradient are the full layer's (tests/tasks/test_first_row.py, every
method). The last hidden state then has one row, so this is applied only to sequence
classifiers of these families, never where the whole sequence is read (NER, masked-LM
verbalizers). Per instance and explicit: `first_row_readout(model)` swaps one module's
forward; parameter names, saved adapters and HF interop are unchanged.
"""

from __future__ import annotations

import sys
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
    """BertSelfAttention.forward (transformers 5) with the query of row 0 alone: (B, n, h) -> (B, 1, h)."""
    if cache is not None or kwargs.get("encoder_hidden_states") is not None:
        return type(self).forward(self, hidden_states, attention_mask, cache=cache, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    b, n, d = hidden_states.shape[0], hidden_states.shape[1], self.attention_head_size
    query = self.query(hidden_states[:, :1]).view(b, 1, -1, d).transpose(1, 2)
    key = self.key(hidden_states).view(b, n, -1, d).transpose(1, 2)
    value = self.value(hidden_states).view(b, n, -1, d).transpose(1, 2)
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1]                    # (B, 1, n, n) -> the query row kept
    eager = sys.modules[type(self).__module__].eager_attention_forward
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager)
    out, weights = attend(self, query, key, value, attention_mask,
                          dropout=0.0 if not self.training else self.dropout.p, scaling=self.scaling, **kwargs)
    return out.reshape(b, 1, -1).contiguous(), weights


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
