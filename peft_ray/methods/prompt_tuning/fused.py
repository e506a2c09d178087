"""Prompt tuning's hot path through peft_ray_kernels.ops.prompt_concat_linear.

The first layer's Q/K/V projections see ``h = [P'; X']`` where P' is the prompt after
the per-token embedding steps (position embedding, LayerNorm/RMSNorm). Those steps act
on each token alone, so without dropout (always in eval; in training when the embedding
dropout is off, as in the shipped prompt-tuning jobs) P' is the same for every sequence:
its projection is computed once per batch (shared prompt) and broadcast. Whether the rows
are equal is checked on the batch (one compare of B x n_p x d values), not assumed; where
they differ the per-sample form runs (on the CPU, the plain linear).

In training, only the prompt's gradient is read below layer 0 unless the job trains an
embedding too, so the token rows go to the op without a gradient (autograd's graph below
`h` is walked for any other trainable tensor): the (B x n, d) input-gradient GEMM of each
projection is skipped, and the prompt's gradient is the batch sum at its rows times W.
Exact (tests/methods/test_prompt_fusion.py).

On the CPU, "auto" runs the op's eager form (kernels/eager.py). Opt-in and per instance:
`fuse_first_layer(model, n_p, backend, prompt)` swaps the forward of the named projection
modules of one model; nothing is patched at import; backend "torch" leaves the model as is.

Not applied where the causal prompt cache can run (causal_cache.py, Llama/GPT-2 with
`method.prompt_cache` not off): its input pass feeds layer 0 only the n token rows, so the
"first n_p rows are the prompt" assumption here would be wrong, and it already projects the
prompt once per batch at every layer, which covers this fusion's saving at layer 0.
"""

from __future__ import annotations

import re
import types
from typing import List, Optional

import torch
from torch import nn

from peft_ray_kernels.ops import resolve_backend
from peft_ray_kernels.ops import prompt_concat_linear

# First-layer projections fed by the embedding output, per family (see kernels/README.md).
FIRST_LAYER = [
    r"(^|\.)layer\.0\.attention\.self\.(query|key|value)$",            # BERT family
    r"(^|\.)layers\.0\.self_attn\.(q|k|v)_proj$",                      # Llama family
    r"(^|\.)encoder\.block\.0\.layer\.0\.SelfAttention\.(q|k|v)$",     # T5 encoder
]


def only_prompt_below(h: torch.Tensor, prompt: torch.Tensor) -> bool:
    """Whether every trainable tensor autograd reaches from `h` is `prompt` (a short walk: the
    embedding steps' graph)."""
    seen, todo = set(), [h.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        leaf = getattr(fn, "variable", None)   # AccumulateGrad: a trainable leaf
        if leaf is not None and leaf is not prompt:
            return False
        todo.extend(nxt for nxt, _ in fn.next_functions)
    return True


def _split_rows(h: torch.Tensor, n_p: int, prompt: Optional[nn.Parameter], cpu: bool):
    """(prompt rows, token rows) for the op, or None where the CPU has nothing to save.
    The prompt rows are one (n_p, d) tensor when every sequence's are equal (always in eval; in
    training too when the embedding steps have no dropout), else (B, n_p, d). The token rows come
    detached when training reaches no trainable tensor but the prompt below them: the per-token
    embedding steps then carry their gradient nowhere."""
    shared = bool(torch.equal(h[:, :n_p], h[:1, :n_p].expand(h.shape[0], -1, -1)))
    if cpu and not shared:
        return None
    x = h[:, n_p:]
    if h.requires_grad and prompt is not None and only_prompt_below(h, prompt):
        x = x.detach()
    return (h[0, :n_p] if shared else h[:, :n_p]), x


def _fused_forward(n_p: int, backend: str, prompt: Optional[nn.Parameter], last: dict):
    def forward(self: nn.Linear, h: torch.Tensor) -> torch.Tensor:
        if not self.adapter_enabled or h.dim() != 3 or h.shape[1] <= n_p:
            return nn.Linear.forward(self, h)
        cpu = resolve_backend(backend, h.device) == "torch"
        # Q, K and V read the same input: split it once, so the prompt rows' gradient from all three
        # reaches `h` through one slice (one scatter into h's shape, not three). The split's views keep
        # `h` alive until the next batch replaces it, so the identity test cannot see a reused id.
        if last.get("input") is not h:
            last["input"], last["rows"] = h, _split_rows(h, n_p, prompt, cpu)
        rows = last["rows"]
        if rows is None:
            return nn.Linear.forward(self, h)
        return prompt_concat_linear(rows[0], rows[1], self.weight, self.bias, backend=backend)
    return forward


def fuse_first_layer(model: nn.Module, n_p: int, backend: str, prompt: Optional[nn.Parameter] = None) -> List[str]:
    """Route the first layer's Q/K/V through the fused op; returns the module names. `prompt`, the
    trained parameter, lets training skip the token rows' gradient where nothing else trainable lies
    below. Backend "torch" leaves the model as it is: the plain PyTorch path."""
    if backend == "torch":
        return []
    done, last = [], {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(re.search(p, name) for p in FIRST_LAYER):
            module.forward = types.MethodType(_fused_forward(n_p, backend, prompt, last), module)
            module.adapter_enabled = True   # AdapterModel.disable_adapter: no prompt rows, so no fusion
            done.append(name)
    return done
