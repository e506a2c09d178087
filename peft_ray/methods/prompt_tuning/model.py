"""Prompt tuning: trainable virtual-token embeddings P prepended to the input embeddings.

Semantics are exactly HF PEFT's (so our adapters load there with the same logits):
``inputs_embeds = [P; E(x)]``, the attention mask gets n_p leading ones, token_type_ids
n_p leading zeros, and a decoder-only LM's labels n_p leading -100s. Position embeddings
then see positions 0..n_p+n-1. Causal decoders compute the same thing with the prompt run
once per batch (causal_cache.py, `method.prompt_cache`).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from peft_ray.errors import SpecError
from peft_ray.methods.adapter_model import PROMPT_PREFIX, AdapterModel, check_keys, copy_checked, load_init_from
from peft_ray.methods.common import BuildContext
from peft_ray.methods import prompt_decoding
from peft_ray.methods import causal_cache
from peft_ray.methods.prompt_tuning.config import PEFT_INIT
from peft_ray.methods.prompt_tuning.fused import fuse_first_layer
from peft_ray.methods.virtual_tokens import prepend_prompt, text_ids


class PromptTuningModel(AdapterModel):
    peft_prefix = PROMPT_PREFIX

    def __init__(self, base: nn.Module, prompt: torch.Tensor, trainable_modules: List[str],
                 prompt_cache: str = "auto"):
        super().__init__(base, trainable_modules)
        self.prompt = nn.Parameter(prompt)  # (n_p, d)
        self.prompt_cache = prompt_cache    # auto | on | off (see causal_cache.py)
        self._dropout = causal_cache.has_dropout(base)
        # PEFT's prompt table has a block per transformer submodule (2 for T5), and T5 reads only the
        # first (the encoder's); the saved prompt_embeddings has PEFT's shape, our Parameter the rows read.
        self.submodules = 2 if getattr(base.config, "is_encoder_decoder", False) else 1

    @property
    def kv_cache_exact(self) -> bool:
        """Decoding may use HF's KV cache: the prompt seeds it (methods/prompt_decoding.py)."""
        return not self.base.training and prompt_decoding.decodes_with_cache(self.base)

    @property
    def num_virtual_tokens(self) -> int:
        return self.prompt.shape[0]

    def is_head_param(self, name: str) -> bool:
        """Every trainable base parameter is the head's (a tied lm_head is saved under the name it has
        first, e.g. the input embeddings)."""
        return name.startswith("base.")

    def forward(self, input_ids: torch.Tensor = None, attention_mask: Optional[torch.Tensor] = None, **kw):
        if not self.adapter_enabled:
            return self.base(input_ids=input_ids, attention_mask=attention_mask, **kw)
        if prompt_decoding.is_decode_call(self.base, kw):
            return prompt_decoding.decode_forward(self.base, lambda: self.prompt, input_ids, attention_mask, kw)
        if causal_cache.use_cache(self.base, self.prompt_cache, self._dropout, kw):
            return causal_cache.cached_forward(self.base, self.prompt, input_ids, attention_mask, kw)
        return prepend_prompt(self.base, self.prompt, input_ids, attention_mask, kw)

    def saved_prompt(self) -> torch.Tensor:
        """(submodules * n_p, d): PEFT's prompt table (the unread decoder block repeats the prompt)."""
        return self.prompt if self.submodules == 1 else torch.cat([self.prompt] * self.submodules)

    def adapter_state(self) -> Dict[str, torch.Tensor]:
        """Trainable tensors under HF PEFT's key names (call inside a ZeRO-3 gather)."""
        return {"prompt_embeddings": self.saved_prompt(), **self.head_state()}

    def load_adapter_state(self, state: Dict[str, torch.Tensor], source: str = "adapter") -> None:
        """Strict, as every method: each trainable tensor covered, no key left over."""
        heads = self.head_state()
        check_keys(set(state), {"prompt_embeddings", *heads}, source)
        prompt = state["prompt_embeddings"]
        with torch.no_grad():
            if prompt.shape[0] == self.num_virtual_tokens * self.submodules:   # PEFT's table: its first block
                prompt = prompt[:self.num_virtual_tokens]
            copy_checked(self.prompt, prompt, "prompt_embeddings", source)
            for key, value in state.items():
                if key != "prompt_embeddings":
                    copy_checked(heads[key], value, key, source)


def init_prompt(base: nn.Module, cfg, ctx: BuildContext) -> torch.Tensor:
    """(n_p, d) initial prompt: from text, sampled vocabulary rows, or scaled noise."""
    emb = base.get_input_embeddings().weight.detach()
    n_p = cfg.num_virtual_tokens
    g = torch.Generator().manual_seed(ctx.seed)
    if cfg.init == "text":
        return emb[torch.tensor(text_ids(ctx.tokenizer, cfg.init_text, n_p))].clone()
    if cfg.init == "vocab":
        special = set(ctx.tokenizer.all_special_ids)
        # Skip the first ids ([unused*] rows in BERT vocabularies are untrained).
        low = min(1000, emb.shape[0] // 4)
        ids = torch.randint(low, emb.shape[0], (n_p * 2,), generator=g)
        ids = [i for i in ids.tolist() if i not in special][:n_p]
        return emb[torch.tensor(ids)].clone()
    std = emb.float().std().item()
    return torch.randn(n_p, emb.shape[1], generator=g) * std


def build(base: nn.Module, cfg, ctx: BuildContext) -> PromptTuningModel:
    prompt = init_prompt(base, cfg, ctx)
    modules = list(dict.fromkeys(ctx.head_modules + list(cfg.modules_to_save or [])))
    model = PromptTuningModel(base, prompt, modules, cfg.prompt_cache)
    if cfg.init_from:
        load_init_from(model, cfg.init_from, "PROMPT_TUNING")
    cached = cfg.prompt_cache != "off" and causal_cache.supports_cache(base)
    if cfg.prompt_cache == "on" and not cached:
        raise SpecError(f"method.prompt_cache: on needs a causal decoder of the families "
                        f"{list(causal_cache.CACHED_FAMILIES)}, not model type "
                        f"'{getattr(base.config, 'model_type', '?')}'; use auto or off")
    if not cached:
        # The fusion assumes layer 0's Q/K/V input starts with the n_p prompt rows. With the cache
        # the input pass has no prompt rows (in eval the fused op would broadcast sequence 0's first
        # n_p tokens as "the prompt"), and the cache already projects the prompt once per batch at
        # every layer, which subsumes what the fusion saves at layer 0.
        fuse_first_layer(base, cfg.num_virtual_tokens, ctx.kernels, model.prompt)
    return model


def peft_config(model: PromptTuningModel, cfg, base_path: str, task_type: str) -> dict:
    """adapter_config.json exactly as HF PEFT 0.21 writes it for prompt tuning."""
    mcfg = model.base.config
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": task_type,
        "base_model_name_or_path": base_path,
        "num_virtual_tokens": model.num_virtual_tokens,
        "token_dim": int(model.prompt.ds_shape[-1] if hasattr(model.prompt, "ds_shape") else model.prompt.shape[-1]),
        "num_transformer_submodules": 2 if getattr(mcfg, "is_encoder_decoder", False) else 1,
        "num_attention_heads": mcfg.num_attention_heads,
        "num_layers": mcfg.num_hidden_layers,
        # PEFT's own name for the init. PEFT re-runs it only when loading for training
        # (inference_mode off; TEXT then reads the tokenizer named here), and overwrites it
        # with the saved prompt either way.
        "prompt_tuning_init": PEFT_INIT[cfg.init],
        "prompt_tuning_init_text": cfg.init_text if cfg.init == "text" else None,
        "tokenizer_name_or_path": base_path if cfg.init == "text" else None,
        "tokenizer_kwargs": None,
        "modules_to_save": model.trainable_modules or None,
        "inference_mode": True,
        "revision": None,
        "auto_mapping": None,
    }
