"""Tiny models of each family (from config, seeded, no download) and inputs for them.

A family is a (model architecture, HF PEFT task type) pair: the task types PEFT
supports for that architecture.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch

VOCAB, PAD = 100, 0


def _bert_cls():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=PAD, num_labels=3))


def _gpt2_config():
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=PAD,
                      bos_token_id=1, eos_token_id=1, num_labels=3)


def _gpt2_cls():
    from transformers import GPT2ForSequenceClassification

    return GPT2ForSequenceClassification(_gpt2_config())


def _gpt2_lm():
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel(_gpt2_config())


def _llama_config():
    from transformers import LlamaConfig

    # GQA: 4 query heads share 2 key/value heads.
    return LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                       pad_token_id=PAD, bos_token_id=1, eos_token_id=1, num_labels=3)


def _llama_cls():
    from transformers import LlamaForSequenceClassification

    return LlamaForSequenceClassification(_llama_config())


def _llama_lm():
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(_llama_config())


def _t5_s2s():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, pad_token_id=PAD,
        eos_token_id=1, decoder_start_token_id=PAD))


FAMILIES: Dict[str, Tuple[Callable, str]] = {
    "bert-cls": (_bert_cls, "SEQ_CLS"), "gpt2-cls": (_gpt2_cls, "SEQ_CLS"), "gpt2-lm": (_gpt2_lm, "CAUSAL_LM"),
    "llama-cls": (_llama_cls, "SEQ_CLS"), "llama-lm": (_llama_lm, "CAUSAL_LM"),
    "t5-s2s": (_t5_s2s, "SEQ_2_SEQ_LM"),
}


def make_base(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return FAMILIES[family][0]().eval()


def task_type(family: str) -> str:
    return FAMILIES[family][1]


def make_inputs(family: str, seed: int = 1) -> dict:
    """Two rows, the second right-padded, so masks and pooling are exercised."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = PAD, 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if family.startswith("t5"):
        batch["decoder_input_ids"] = torch.randint(2, VOCAB, (2, 5), generator=g)
    return batch


def valid_logits(out, batch: dict, family: str) -> torch.Tensor:
    """The logits that mean something: all for classification/seq2seq, unpadded positions for an LM."""
    logits = out.logits
    if not family.endswith("-lm"):
        return logits
    mask = batch["attention_mask"]
    extra = logits.shape[1] - mask.shape[1]          # input-level virtual tokens
    mask = torch.cat([mask.new_ones(mask.shape[0], extra), mask], dim=1)
    return logits[mask.bool()]
