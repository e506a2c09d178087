"""What the LM-head tasks share at training/eval time: logits alignment, the base config."""

from __future__ import annotations

import functools
import inspect

import torch

from peft_ray.rows.tokens import IGNORE


def seq_logits(logits: torch.Tensor, n: int) -> torch.Tensor:
    """The logits of the n input positions: prompt tuning and p-tuning prepend virtual tokens,
    whose positions come first in the output (as in HF PEFT)."""
    return logits[:, logits.shape[1] - n:]


def base_config(engine):
    """The HF config under the DeepSpeed engine and the PEFT wrapper."""
    return hf_model(engine).config


def hf_model(engine):
    """The HF model under the DeepSpeed engine (or InferenceEngine) and the method's wrapper."""
    m = getattr(engine, "module", engine)
    return getattr(m, "base", m)


@functools.lru_cache(maxsize=None)
def _forward_takes(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.forward).parameters


def keeps_logits(engine) -> bool:
    """Whether the HF model computes logits only at asked-for positions (`logits_to_keep`, the
    causal LMs of transformers 5): then a loss that reads a few positions need not project every
    row through the LM head (on SmolLM2 the head is 28M of 135M parameters, B x n x 49,152 floats).
    The losses pass (B, k) per-row positions, which only transformers' `slice_logits_to_keep`
    understands (earlier releases index `hidden[:, positions]`, a shape error): so the model's own
    module must use it."""
    cls = type(hf_model(engine))
    return _forward_takes(cls, "logits_to_keep") and _uses_slice_helper(cls)


@functools.lru_cache(maxsize=None)
def _uses_slice_helper(cls: type) -> bool:
    import sys

    return hasattr(sys.modules.get(cls.__module__), "slice_logits_to_keep")


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """Decoder inputs for a seq2seq model from its labels (what T5._shift_right does)."""
    dec = labels.new_full(labels.shape, pad_id)
    dec[:, 1:] = labels[:, :-1]
    dec[:, 0] = start_id
    return dec.masked_fill(dec == IGNORE, pad_id)
