"""Prompt tuning's hot path through peft_ray_kernels.ops.prompt_concat_linear.

The first layer's Q/K/V projections see ``h = [P'; X']`` where P' is the prompt after
the per-token embedding steps (position embedding, LayerNorm/RMSNorm). Those steps act
on each token alone, so in eval mode P' is the same for every sequence: its projection
is computed once per batch (shared prompt) and broadcast, while the X rows go through
the tiled GEMM that writes straight after it. In training, dropout makes P' differ per
sequence, so the per-sample form is used (still no separate concat of the outputs).

Opt-in and per instance: `fuse_first_layer(model, n_p, backend)` swaps the forward of
the named projection modules of one model; nothing is patched at import, and with
backend "auto" on CPU tensors the original forward runs (the reference is no faster).

Not applied where the causal prompt cache can run (causal_cache.py, Llama/GPT-2 with
`method.prompt_cache` not off): its input pass feeds layer 0 only the n token rows, so the
"first n_p rows are the prompt" assumption here would be wrong, and it already projects the
prompt once per batch at every layer, which covers this fusion's saving at layer 0.
"""

from __future__ import annotations

import re
import types
from typing import List

import torch
from torch import nn

from peft_ray_kernels._backend import resolve_backend
from peft_ray_kernels.ops import prompt_concat_linear

# First-layer projections fed by the embedding output, per family (see kernels/README.md).
FIRST_LAYER = [
    r"(^|\.)layer\.0\.attention\.self\.(query|key|value)$",            # BERT family
    r"(^|\.)layers\.0\.self_attn\.(q|k|v)_proj$",                      # Llama family
    r"(^|\.)encoder\.block\.0\.layer\.0\.SelfAttention\.(q|k|v)$",     # T5 encoder
]


def _fused_forward(n_p: int, backend: str):
    def forward(self: nn.Linear, h: torch.Tensor) -> torch.Tensor:
        if not self.adapter_enabled or h.dim() != 3 or h.shape[1] <= n_p or (
                backend == "auto" and resolve_backend("auto", h.device) == "torch"):
            return nn.Linear.forward(self, h)
        prompt = h[0, :n_p] if not self.training else h[:, :n_p]  # (n_p, d) shared | (B, n_p, d)
        return prompt_concat_linear(prompt, h[:, n_p:], self.weight, self.bias, backend=backend)
    return forward


def fuse_first_layer(model: nn.Module, n_p: int, backend: str) -> List[str]:
    """Route the first layer's Q/K/V through the fused op; returns the module names."""
    if backend == "torch":
        return []
    done = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(re.search(p, name) for p in FIRST_LAYER):
            module.forward = types.MethodType(_fused_forward(n_p, backend), module)
            module.adapter_enabled = True   # AdapterModel.disable_adapter: no prompt rows, so no fusion
            done.append(name)
    return done
