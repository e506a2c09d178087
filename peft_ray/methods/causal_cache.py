"""Causal-decoder prompt cache: the soft prompt's per-layer K/V computed once per batch.

In a causal decoder the n_p prompt rows attend only to earlier prompt rows, so their hidden
states, keys and values at every layer are the same for every sequence of the batch. HF
PEFT's input-level prepend still runs them B times. Here the prompt runs once as a batch of
one, its per-layer K/V become a `DynamicCache` expanded (a stride-0 view, no copy) to B, and
the B sequences run on their n tokens only, attending to [prompt K/V ; their own K/V]:

    prompt pass:  (1, n_p, d) -> per layer K, V (1, h_kv, n_p, hd), and (1, n_p, d) last hidden
    input pass:   (B, n, d) at positions n_p.., mask [1]*n_p + mask, cache expanded to B

Exactly HF PEFT's semantics (same logits, same gradients; tests/methods/test_prompt_cache.py):
- positions: Llama/GPT-2 take position_ids = past length + arange(n), i.e. n_p.. as after
  the prepend (neither derives positions from the mask, so left padding is the same too);
- logits of a causal LM keep PEFT's shape (B, n_p + n, V): the prompt rows' logits come from
  the prompt pass, broadcast; the loss is HF's own `loss_function` with PEFT's -100 labels on
  the virtual tokens (the last prompt row predicts the first label, as in PEFT);
- nothing is detached: the gradient of the expanded cache sums over B into the prompt pass.

Work per step drops from B (n_p + n) token rows per layer to B n + n_p, and attention from
B (n_p + n)^2 / 2 to B n (n_p + n): at n_p = 64, n = 128 that is ~1/3 fewer rows through
every linear layer (bench/prompt_cache.py measures the step time).

Only where this is exact: Llama and GPT-2 families (causal LM and sequence classification
heads), eager/SDPA attention, no caller-supplied cache/positions/hidden-state outputs, and in
training only without active dropout (the prompt pass would share one dropout mask over the
batch). `prompt_cache: on` keeps it on under dropout too.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from peft_ray.rows.tokens import IGNORE

CACHED_FAMILIES = ("llama", "gpt2")                       # model_type values tested for exactness
LM_HEADS = ("ForCausalLM", "LMHeadModel")                 # class-name suffixes: token logits + lm_head
CLS_HEADS = ("ForSequenceClassification",)                # pooled logits: the prompt rows never reach them
EXACT_ATTENTION = ("eager", "sdpa")
# Caller arguments the two-pass forward cannot honour exactly: fall back to the prepend.
FALLBACK_KW = ("cache", "past_key_values", "position_ids", "inputs_embeds", "output_hidden_states",
               "output_attentions")


def supports_cache(base: nn.Module) -> bool:
    """A decoder-only family and head for which the cached forward is exact."""
    cfg = base.config
    name = type(base).__name__
    return (getattr(cfg, "model_type", "") in CACHED_FAMILIES and not getattr(cfg, "is_encoder_decoder", False)
            and name.endswith(LM_HEADS + CLS_HEADS))


def has_dropout(base: nn.Module) -> bool:
    """Any dropout that acts in training (nn.Dropout modules, or Llama's functional attention dropout)."""
    if float(getattr(base.config, "attention_dropout", 0.0) or 0.0) > 0:
        return True
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in base.modules())


def use_cache(base: nn.Module, mode: str, dropout: bool, kw: Dict[str, Any]) -> bool:
    """Whether this forward takes the cached path (mode: auto | on | off)."""
    if mode == "off" or not supports_cache(base):
        return False
    if any(kw.get(k) is not None and kw.get(k) is not False for k in FALLBACK_KW):
        return False
    if base.config._attn_implementation not in EXACT_ATTENTION:
        return False
    if base.training and getattr(base.base_model, "gradient_checkpointing", False):
        return False  # GPT-2 drops the cache under gradient checkpointing
    return mode == "on" or not (base.training and dropout)


def expand_cache(cache, batch: int):
    """The prompt's cache with every layer's K/V expanded (1, h, n_p, hd) -> (B, h, n_p, hd), no copy.

    The layers are set directly: `DynamicLayer.update` would cat onto an empty tensor (a copy).
    The input pass then cats its own K/V after these views (one copy, as the prepend has too)."""
    for layer in cache.layers:
        layer.keys = layer.keys.expand(batch, -1, -1, -1)
        layer.values = layer.values.expand(batch, -1, -1, -1)
    return cache


def prompt_pass(base: nn.Module, prompt: torch.Tensor, token_type_ids: Optional[torch.Tensor]):
    """Run the decoder on the prompt alone, (1, n_p, d): returns its output, with `.cache` filled."""
    from transformers import DynamicCache

    kw = {}
    if token_type_ids is not None:  # the prepend gives the prompt rows token type 0
        kw["token_type_ids"] = token_type_ids.new_zeros(1, prompt.shape[0])
    return base.base_model(inputs_embeds=prompt.unsqueeze(0), cache=DynamicCache(config=base.config),
                           use_cache=True, **kw)


def cached_forward(base: nn.Module, prompt: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: Optional[torch.Tensor], kw: Dict[str, Any]):
    """The prepend's outputs (logits, loss) from one prompt pass plus one pass over the inputs."""
    B, n_p = input_ids.shape[0], prompt.shape[0]
    kw = dict(kw)
    labels = kw.pop("labels", None)
    embeds = base.get_input_embeddings()(input_ids)                                   # (B, n, d)
    p_out = prompt_pass(base, prompt.to(embeds.dtype), kw.get("token_type_ids"))
    cache = expand_cache(p_out.cache, B)                                              # (B, h_kv, n_p, hd) views
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask.new_ones(B, n_p), attention_mask], dim=1)
    lm = type(base).__name__.endswith(LM_HEADS)
    num_items = kw.pop("num_items_in_batch", None) if lm else None
    if labels is not None and not lm:
        kw["labels"] = labels  # pooled heads: the loss sees the same logits as after the prepend
    out = base(inputs_embeds=embeds, attention_mask=attention_mask, cache=cache, use_cache=False, **kw)
    if not lm or (labels is None and inputs_only(kw.get("logits_to_keep"), input_ids.shape[1])):
        return out   # the logits asked for are all at input positions: the prompt rows' are not needed
    return lm_output(base, p_out.last_hidden_state, out.logits, labels, num_items)


def inputs_only(keep, n: int) -> bool:
    """Whether `logits_to_keep` (HF's: 0 = all, k = the last k, a tensor = those input positions)
    asks only for positions of the n inputs."""
    return isinstance(keep, torch.Tensor) or (isinstance(keep, int) and 0 < keep <= n)


def lm_output(base: nn.Module, prompt_hidden: torch.Tensor, logits: torch.Tensor,
              labels: Optional[torch.Tensor], num_items: Optional[torch.Tensor]):
    """PEFT's (B, n_p + n, V) logits, and its loss with -100 labels on the virtual tokens."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    B = logits.shape[0]
    p_logits = base.get_output_embeddings()(prompt_hidden).to(logits.dtype)          # (1, n_p, V)
    loss = None if labels is None else lm_loss(base, p_logits[:, -1], logits, labels, num_items)
    logits = torch.cat([p_logits.expand(B, -1, -1), logits], dim=1)                   # (B, n_p + n, V)
    return CausalLMOutputWithPast(loss=loss, logits=logits)


def lm_loss(base: nn.Module, p_last: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
            num_items: Optional[torch.Tensor]) -> torch.Tensor:
    """PEFT's loss on [P; x] with labels [-100 * n_p; labels], from its only non-ignored terms.

    After the shift, prompt row n_p - 1 predicts labels[:, 0] and x row j predicts labels[:, j+1];
    every other prompt row meets -100. So the loss is HF's `loss_function` over those terms,
    summed and divided by the same count (its `mean`), with no (B, n_p + n, V) copy and no
    log-softmax over B n_p ignored rows. p_last: (1, V) last prompt row; logits: (B, n, V)."""
    B, V = labels.shape[0], base.config.vocab_size
    if num_items is None:                       # HF's mean: over the labels that are not -100
        num_items = (labels != IGNORE).sum()
    shift = nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)                      # (B, n)
    loss_x = base.loss_function(logits=logits, labels=None, shift_labels=shift, vocab_size=V,
                                num_items_in_batch=num_items)
    loss_p = base.loss_function(logits=p_last.expand(B, V), labels=None, shift_labels=labels[:, 0],
                                vocab_size=V, num_items_in_batch=num_items)
    return loss_x + loss_p
