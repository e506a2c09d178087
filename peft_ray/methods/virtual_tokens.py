"""Shared by the prompt-learning methods: the sizes HF PEFT derives from a model config (prompt
tuning, P-tuning, prefix tuning), and the virtual tokens prepended to the input embeddings
(prompt tuning and P-tuning; prefix tuning injects its prefixes at the attention instead)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from peft_ray.errors import SpecError
from peft_ray.rows.tokens import IGNORE


@dataclass(frozen=True)
class PromptDims:
    """What PEFT 0.21's _prepare_prompt_learning_config computes (and writes to adapter_config.json)."""

    num_layers: int
    token_dim: int                      # prefix tuning: head_dim * num_key_value_heads (GQA)
    num_attention_heads: int            # prefix tuning: num_key_value_heads (GQA)
    num_transformer_submodules: int     # 2 for encoder-decoder models (T5)

    @property
    def head_dim(self) -> int:
        return self.token_dim // self.num_attention_heads


def prompt_dims(config: Any, prefix: bool) -> PromptDims:
    layers, dim, heads = config.num_hidden_layers, config.hidden_size, config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None)
    if prefix and kv_heads is not None:  # GQA: the prefix holds keys/values, so it has the KV heads' width
        head_dim = getattr(config, "head_dim", None) or dim // heads
        dim, heads = head_dim * kv_heads, kv_heads
    return PromptDims(num_layers=layers, token_dim=dim, num_attention_heads=heads,
                      num_transformer_submodules=2 if getattr(config, "is_encoder_decoder", False) else 1)


def dims_config(dims: PromptDims) -> Dict[str, int]:
    return {"num_layers": dims.num_layers, "token_dim": dims.token_dim,
            "num_attention_heads": dims.num_attention_heads,
            "num_transformer_submodules": dims.num_transformer_submodules}


def prepend_prompt(base: nn.Module, prompt: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: Optional[torch.Tensor], kw: Dict[str, Any]):
    """HF PEFT's input-level injection: ``inputs_embeds = [P; E(x)]``, n_p leading ones in the
    mask, zeros in token_type_ids, and -100 labels for the virtual tokens of a decoder-only LM."""
    B, n_p = input_ids.shape[0], prompt.shape[0]
    embeds = base.get_input_embeddings()(input_ids)                                  # (B, n, d)
    embeds = torch.cat([prompt.to(embeds.dtype).unsqueeze(0).expand(B, -1, -1), embeds], dim=1)
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask.new_ones(B, n_p), attention_mask], dim=1)
    if kw.get("token_type_ids") is not None:
        kw["token_type_ids"] = torch.cat([kw["token_type_ids"].new_zeros(B, n_p), kw["token_type_ids"]], dim=1)
    keep = kw.get("logits_to_keep")
    if isinstance(keep, torch.Tensor):   # positions of the inputs -> of [P; X]
        kw["logits_to_keep"] = keep + n_p
    labels = kw.get("labels")
    is_enc_dec = getattr(base.config, "is_encoder_decoder", False)
    if labels is not None and labels.dim() == 2 and not is_enc_dec:
        kw["labels"] = torch.cat([labels.new_full((B, n_p), IGNORE), labels], dim=1)
    return base(inputs_embeds=embeds, attention_mask=attention_mask, **kw)


def text_ids(tokenizer, text: str, n: int) -> List[int]:
    """The text's token ids (no specials) repeated or cut to n: one id per virtual token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return (ids * (n // max(len(ids), 1) + 1))[:n]


def check_positions(base: nn.Module, n_p: int, n: int) -> None:
    """Absolute position tables (BERT, GPT-2) must cover the virtual tokens too."""
    if getattr(base.config, "model_type", "") not in ("bert", "roberta", "gpt2"):
        return
    limit = base.config.max_position_embeddings
    if n_p + n > limit:
        raise SpecError(f"method.num_virtual_tokens ({n_p}) + sequence length ({n}) exceeds the model's "
                        f"{limit} positions; lower model.max_length or method.num_virtual_tokens")
