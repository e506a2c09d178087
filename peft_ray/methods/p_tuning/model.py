"""P-tuning (Liu et al., 2021): input-level virtual tokens produced by a prompt encoder
(MLP or LSTM) from trainable embeddings, with HF PEFT's PromptEncoder semantics.

PEFT saves the encoder's *output* as ``prompt_embeddings`` (num_virtual_tokens x
num_transformer_submodules rows; T5 uses the first half), so that is what we save,
and an imported prompt is trained directly.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from peft_ray.methods.adapter_model import (PROMPT_PREFIX, AdapterModel, build_device, check_keys,
                                            copy_checked, randn, load_init_from, seeded, trainable_modules)
from peft_ray.methods.common import BuildContext
from peft_ray.methods import prompt_decoding
from peft_ray.methods.virtual_tokens import PromptDims, dims_config, prepend_prompt, prompt_dims


class PromptEncoder(nn.Module):
    """PEFT's PromptEncoder: embeddings E (total, d) -> MLP(E) or MLP(BiLSTM(E))."""

    def __init__(self, embedding: torch.Tensor, hidden: int, kind: str, lstm_layers: int, dropout: float):
        super().__init__()
        d = embedding.shape[1]
        self.embedding = nn.Parameter(embedding)                                # (total, d), N(0, 1)
        self.kind = kind
        if kind == "LSTM":
            self.lstm_head = nn.LSTM(d, hidden, num_layers=lstm_layers, dropout=dropout, bidirectional=True,
                                     batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, d))
        else:
            self.mlp_head = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                          nn.Linear(hidden, d))

    def forward(self) -> torch.Tensor:
        return self.compute()

    def compute(self) -> torch.Tensor:
        if self.kind == "LSTM":
            return self.mlp_head(self.lstm_head(self.embedding.unsqueeze(0))[0]).squeeze(0)  # (total, d)
        return self.mlp_head(self.embedding)


class PTuningModel(AdapterModel):
    peft_prefix = PROMPT_PREFIX

    def __init__(self, base: nn.Module, heads: List[str], n: int, dims: PromptDims, cfg, reparameterize: bool,
                 seed: int):
        super().__init__(base, heads)
        self.dims = dims
        self.num_virtual_tokens = n
        total, d = n * dims.num_transformer_submodules, dims.token_dim
        emb = randn((total, d), seeded(seed), base)                             # PEFT: nn.Embedding's N(0, 1)
        if reparameterize:
            with torch.random.fork_rng(), build_device(base):
                torch.manual_seed(seed)  # nn.Linear/LSTM default init: same on every rank
                self.prompt_encoder = PromptEncoder(emb, cfg.encoder_hidden_size or d,
                                                    cfg.encoder_reparameterization_type, cfg.encoder_num_layers,
                                                    cfg.encoder_dropout)
        else:
            self.prompt = nn.Parameter(emb)

    def prompt_values(self) -> torch.Tensor:
        return self.prompt_encoder() if hasattr(self, "prompt_encoder") else self.prompt

    @property
    def kv_cache_exact(self) -> bool:
        """Decoding may use HF's KV cache: the prompt seeds it (methods/prompt_decoding.py)."""
        return not self.base.training and prompt_decoding.decodes_with_cache(self.base)

    def forward(self, input_ids=None, attention_mask=None, **kw):
        if not self.adapter_enabled:
            return self.base(input_ids=input_ids, attention_mask=attention_mask, **kw)
        if prompt_decoding.is_decode_call(self.base, kw):
            prompt_fn = lambda: self.prompt_values()[: self.num_virtual_tokens]   # noqa: E731 (first call only)
            return prompt_decoding.decode_forward(self.base, prompt_fn, input_ids, attention_mask, kw)
        prompt = self.prompt_values()[: self.num_virtual_tokens]                # (n, d)
        return prepend_prompt(self.base, prompt, input_ids, attention_mask, kw)

    def adapter_state(self):
        return {"prompt_embeddings": self.saved_prompt(), **self.head_state()}

    def saved_prompt(self) -> torch.Tensor:
        """The prompt evaluation reads: the encoder in eval mode. Saves happen in the middle of
        training, and a train-mode LSTM encoder with dropout gave one random draw (about 10% off
        the evaluated prompt, from the training RNG), so `adapter/` was not the model scored."""
        if not hasattr(self, "prompt_encoder"):
            return self.prompt
        encoder, was_training = self.prompt_encoder, self.prompt_encoder.training
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            encoder.eval()
            try:
                return encoder.compute()
            finally:
                encoder.train(was_training)

    def load_adapter_state(self, state, source: str = "adapter") -> None:
        """A saved prompt is the encoder's output (PEFT saves it so too): a model built with the encoder
        (eval and predict build the run's job) drops it and holds the prompt itself, as init_from does."""
        if hasattr(self, "prompt_encoder"):
            encoder = self.prompt_encoder
            del self.prompt_encoder
            self.prompt = nn.Parameter(torch.empty_like(encoder.embedding))
        check_keys(set(state), {"prompt_embeddings", *self.head_state()}, source)
        params = {"prompt_embeddings": self.prompt, **self.head_state()}
        with torch.no_grad():
            for key, value in state.items():
                copy_checked(params[key], value, key, source)


def build(base: nn.Module, cfg, ctx: BuildContext) -> PTuningModel:
    dims = prompt_dims(base.config, prefix=False)
    model = PTuningModel(base, trainable_modules(ctx, cfg.modules_to_save), cfg.num_virtual_tokens, dims, cfg,
                         reparameterize=not cfg.init_from, seed=ctx.seed)
    if cfg.init_from:
        load_init_from(model, cfg.init_from, "P_TUNING")
    return model


def peft_config(model: PTuningModel, cfg, base_path: str, task_type: str) -> dict:
    """adapter_config.json with every key HF PEFT 0.21's PromptEncoderConfig writes."""
    return {
        "peft_type": "P_TUNING", "task_type": task_type, "base_model_name_or_path": base_path,
        "num_virtual_tokens": cfg.num_virtual_tokens, **dims_config(model.dims),
        "encoder_reparameterization_type": cfg.encoder_reparameterization_type,
        "encoder_hidden_size": cfg.encoder_hidden_size or model.dims.token_dim,
        "encoder_num_layers": cfg.encoder_num_layers, "encoder_dropout": cfg.encoder_dropout,
        "modules_to_save": model.trainable_modules or None,
        "inference_mode": True, "revision": None, "auto_mapping": None,
    }
