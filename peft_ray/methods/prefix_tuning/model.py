"""Prefix tuning (Li & Liang, 2021; P-tuning v2): learned key/value rows in every layer.

The parameter is PEFT's flat layout, ``(n_p, num_layers * 2 * token_dim)``: per
layer a key block then a value block, each ``(h_kv, head_dim)`` head-major, which
is exactly PEFT's saved ``prompt_embeddings`` (for prefix_projection PEFT saves the
MLP's output, so that is what we save too).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from peft_ray.errors import SpecError
from peft_ray.methods.adapter_model import (PROMPT_PREFIX, AdapterModel, build_device, check_keys,
                                            copy_checked, randn, load_init_from, seeded, trainable_modules)
from peft_ray.methods.attention import wrap_self_attention
from peft_ray.methods.common import BuildContext
from peft_ray.methods.virtual_tokens import PromptDims, check_positions, dims_config, prompt_dims, text_ids


class PrefixEncoder(nn.Module):
    """PEFT's reparameterization: prefix = Linear(tanh(Linear(E))), E: (n_p, token_dim)."""

    def __init__(self, n_p: int, token_dim: int, hidden: int, width: int, embedding: torch.Tensor):
        super().__init__()
        self.embedding = nn.Parameter(embedding)                                # (n_p, token_dim), N(0, 1)
        self.transform = nn.Sequential(nn.Linear(token_dim, hidden), nn.Tanh(), nn.Linear(hidden, width))

    def forward(self) -> torch.Tensor:
        return self.compute()

    def compute(self) -> torch.Tensor:
        return self.transform(self.embedding)                                  # (n_p, width)


class PrefixTuningModel(AdapterModel):
    peft_prefix = PROMPT_PREFIX

    def __init__(self, base: nn.Module, heads: List[str], n_p: int, dims: PromptDims, hidden: Optional[int],
                 backend: str, seed: int):
        super().__init__(base, heads)
        self.dims = dims
        self.num_virtual_tokens = n_p
        self.layers = wrap_self_attention(base, backend)
        width = dims.num_layers * 2 * dims.token_dim
        g = seeded(seed)
        if hidden:
            emb = randn((n_p, dims.token_dim), g, base)                         # PEFT: nn.Embedding's N(0, 1)
            with torch.random.fork_rng(), build_device(base):
                torch.manual_seed(seed)  # nn.Linear's default init: same on every rank
                self.prefix_encoder = PrefixEncoder(n_p, dims.token_dim, hidden, width, emb)
        else:
            self.prefix = nn.Parameter(randn((n_p, width), g, base))            # (n_p, L * 2 * token_dim)

    def prefix_values(self) -> torch.Tensor:
        return self.prefix_encoder() if hasattr(self, "prefix_encoder") else self.prefix

    def layer_entries(self, i: int) -> Tuple[int, int]:
        """Which (key, value) blocks of the flat prefix layer i uses, as PEFT's cache builder does."""
        if self.dims.num_transformer_submodules == 1:
            return 2 * i, 2 * i + 1
        # Encoder-decoder: PEFT duplicates the 2L blocks and regroups them 4 per decoder layer
        # (self k, self v, cross k, cross v), then drops the cross part; decoder layer i therefore
        # reads blocks 4i and 4i + 1, modulo 2L.
        total = 2 * self.dims.num_layers
        return (4 * i) % total, (4 * i + 1) % total

    def forward(self, input_ids=None, attention_mask=None, **kw):
        if not self.adapter_enabled:
            return self.base(input_ids=input_ids, attention_mask=attention_mask, **kw)
        kv = self.prefix_values()
        n_p, td = kv.shape[0], self.dims.token_dim
        blocks = kv.view(n_p, -1, td)                                           # (n_p, 2L, token_dim)
        for i, layer in enumerate(self.layers):
            ek, ev = self.layer_entries(i)
            layer.prefix = (blocks[:, ek], blocks[:, ev])
        try:
            return self.base(input_ids=input_ids, attention_mask=attention_mask,
                             **self._position_kwargs(input_ids, n_p, kw))
        finally:
            for layer in self.layers:
                layer.prefix = None

    def _position_kwargs(self, input_ids, n_p: int, kw: dict) -> dict:
        """x tokens sit at positions n_p.. (after PEFT's n_p cached tokens); no cache is built."""
        cfg = self.base.config
        if cfg.model_type == "t5":  # the decoder's relative bias is offset inside the attention
            return {**kw, "use_cache": False}
        B, n = input_ids.shape
        check_positions(self.base, n_p, n)
        pos = kw.get("position_ids")
        pos = torch.arange(n, device=input_ids.device).expand(B, n) if pos is None else pos
        extra = {} if cfg.model_type == "bert" else {"use_cache": False}
        return {**kw, **extra, "position_ids": pos + n_p}

    def adapter_state(self):
        kv = self.prefix_encoder.compute() if hasattr(self, "prefix_encoder") else self.prefix
        return {"prompt_embeddings": kv, **self.head_state()}

    def load_adapter_state(self, state, source: str = "adapter") -> None:
        if hasattr(self, "prefix_encoder"):
            raise ValueError("a saved prefix is the MLP's output: build without prefix_projection to load it")
        check_keys(set(state), {"prompt_embeddings", *self.head_state()}, source)
        params = {"prompt_embeddings": self.prefix, **self.head_state()}
        with torch.no_grad():
            for key, value in state.items():
                copy_checked(params[key], value, key, source)


TEXT_INIT_FAMILIES = ("llama", "gpt2")


def text_prefix(base: nn.Module, ids: List[int], dims: PromptDims) -> torch.Tensor:
    """(n_p, L * 2 * token_dim): every layer's keys and values for `ids` at positions 0..n_p-1,
    as the frozen model computes them (HF's cache, RoPE already applied: a prefix key is never
    rotated again). Before any training the prefixed model then reads x exactly as the base
    reads the text followed by x."""
    family = getattr(base.config, "model_type", "?")
    if family not in TEXT_INIT_FAMILIES:
        raise SpecError(f"method.init: text for prefix tuning supports the causal families {list(TEXT_INIT_FAMILIES)}, "
                        f"not model type '{family}'; use init: random")
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad():
            device = base.get_input_embeddings().weight.device
            out = base(input_ids=torch.tensor([ids], device=device), use_cache=True)
    finally:
        base.train(was_training)
    cache = getattr(out, "cache", None) or out.past_key_values
    n_p = len(ids)
    blocks = []
    for layer in cache.layers:                                   # (1, h_kv, n_p, head_dim) each
        for t in (layer.keys, layer.values):
            blocks.append(t[0].transpose(0, 1).reshape(n_p, -1))     # head-major, PEFT's layout
    kv = torch.cat(blocks, dim=-1)
    assert kv.shape[1] == dims.num_layers * 2 * dims.token_dim, (kv.shape, dims)
    return kv.float()


def build(base: nn.Module, cfg, ctx: BuildContext) -> PrefixTuningModel:
    dims = prompt_dims(base.config, prefix=True)
    seed_kv = None
    if cfg.init == "text" and not cfg.init_from:
        seed_kv = text_prefix(base, text_ids(ctx.tokenizer, cfg.init_text, cfg.num_virtual_tokens), dims)
    # PEFT saves the projected prefix, so an imported one is trained directly.
    hidden = (cfg.encoder_hidden_size or dims.token_dim) if cfg.prefix_projection and not cfg.init_from else None
    model = PrefixTuningModel(base, trainable_modules(ctx, cfg.modules_to_save), cfg.num_virtual_tokens, dims,
                              hidden, ctx.kernels, ctx.seed)
    if seed_kv is not None:
        with torch.no_grad():
            model.prefix.copy_(seed_kv.to(model.prefix.dtype))
    if cfg.init_from:
        load_init_from(model, cfg.init_from, "PREFIX_TUNING")
    return model


def peft_config(model: PrefixTuningModel, cfg, base_path: str, task_type: str) -> dict:
    """adapter_config.json with every key HF PEFT 0.21's PrefixTuningConfig writes."""
    return {
        "peft_type": "PREFIX_TUNING", "task_type": task_type, "base_model_name_or_path": base_path,
        "num_virtual_tokens": cfg.num_virtual_tokens, **dims_config(model.dims),
        "encoder_hidden_size": cfg.encoder_hidden_size or model.dims.token_dim,
        "prefix_projection": cfg.prefix_projection, "init_weights": None,
        "modules_to_save": model.trainable_modules or None,
        "inference_mode": True, "revision": None, "auto_mapping": None,
    }
