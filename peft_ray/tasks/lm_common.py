"""What the LM-head tasks share at training/eval time: logits alignment, the base config."""

from __future__ import annotations

import torch


def seq_logits(logits: torch.Tensor, n: int) -> torch.Tensor:
    """The logits of the n input positions: prompt tuning and p-tuning prepend virtual tokens,
    whose positions come first in the output (as in HF PEFT)."""
    return logits[:, logits.shape[1] - n:]


def base_config(engine):
    """The HF config under the DeepSpeed engine and the PEFT wrapper."""
    m = getattr(engine, "module", engine)
    m = getattr(m, "base", m)
    return m.config


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """Decoder inputs for a seq2seq model from its labels (what T5._shift_right does)."""
    dec = labels.new_full(labels.shape, pad_id)
    dec[:, 1:] = labels[:, :-1]
    dec[:, 0] = start_id
    return dec.masked_fill(dec == -100, pad_id)
