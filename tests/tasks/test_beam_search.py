"""Beam search picks what HF's `generate(num_beams=K)` picks (length_penalty 1.0, early_stopping
False), on a tiny causal LM made peaky so that endings compete with running beams."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

from peft_ray.tasks.generation.config import DecodingSpec
from peft_ray.tasks.generation.decoding import LMIO, generate

V, EOS, PAD = 40, 1, 0


@pytest.mark.parametrize("num_beams, max_new", [(3, 6), (2, 4)])
def test_beam_search_matches_hf_generate(num_beams, max_new):
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=2, n_positions=64, eos_token_id=EOS,
                                   bos_token_id=EOS, pad_token_id=PAD)).eval()
    with torch.no_grad():
        m.transformer.wte.weight.mul_(8.0)
    io = LMIO(kind="causal", pad_id=PAD, eos_id=EOS)
    cfg = DecodingSpec(strategy="beam", num_beams=num_beams, max_new_tokens=max_new)
    hf_cfg = GenerationConfig(num_beams=num_beams, do_sample=False, max_new_tokens=max_new, length_penalty=1.0,
                              early_stopping=False, eos_token_id=EOS, pad_token_id=PAD)
    g = torch.Generator().manual_seed(1)
    differ = []
    for _ in range(40):
        src = torch.randint(2, V, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist()
        with torch.no_grad():
            ours = generate(m, io, [src], cfg)[0]
            hf = m.generate(torch.tensor([src]), attention_mask=torch.ones(1, len(src), dtype=torch.long),
                            generation_config=hf_cfg)[0, len(src):].tolist()
        hf = [t for t in hf if t != EOS]
        hf = hf[:hf.index(PAD)] if PAD in hf else hf
        if ours != hf:
            differ.append((src, ours, hf))
    assert not differ, differ[:3]
