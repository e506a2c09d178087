"""A pooled classifier reads one row of the last layer: after its attention, compute only that row.

BERT-family sequence classifiers read the last layer's hidden state at position 0 alone
(BertPooler: `hidden[:, 0]`; RoBERTa's head: `features[:, 0, :]`). In that layer every other
row's attention-output projection, residual LayerNorm and feed-forward (9 of the layer's 12 h^2
multiply-adds per token) feed nothing the loss reads. The attention itself still needs every
row's keys and values, so the layer runs whole up to the attention output and continues on
row 0 only: (B, n, h) -> (B, 1, h). On MiniLM (6 layers) that is about 1/8 of the encoder's
forward and backward work per step (bench/first_row.py measures it).

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


def first_row_readout(model: nn.Module) -> bool:
    """Make `model`'s last layer compute row 0 only after its attention; False where not exact."""
    block = last_attention_output(model)
    if block is None:
        return False
    block.forward = types.MethodType(_row0_forward, block)
    return True
