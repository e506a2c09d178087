"""KV-cache decoding (LoRA, IA3, prompt tuning, P-tuning, no adapter) picks the same tokens as
the full re-run."""

from __future__ import annotations

import pytest
import torch

from peft_ray.tasks.generation.config import DecodingSpec
from peft_ray.tasks.generation.decoding import LMIO, generate, kv_cache_exact
from tests.methods.helpers import build_ours, perturb
from tests.methods.families import make_base
from tests.methods.matrix import Row

SOURCES = [[5, 9, 11], [7], [3, 4, 5, 6, 8, 10, 12], [2, 2]]   # ragged: left padding is exercised


class NoCache(torch.nn.Module):
    """The same model with the cache flag off: forces decoding's full re-run path."""
    kv_cache_exact = False

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, **kw):
        return self.m(**kw)


def _full(model, io, cfg):
    return generate(NoCache(model), io, SOURCES, cfg)


@pytest.mark.parametrize("family", ["llama-lm", "gpt2-lm"])
@pytest.mark.parametrize("method", ["lora", "ia3", "prompt_tuning", "p_tuning", None])
@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_cached_decoding_equals_the_full_rerun(family, method, strategy):
    base = make_base(family)
    if method is None:
        model = base
    else:
        kw = {"lora": {"r": 4, "lora_alpha": 8}, "ia3": {}, "prompt_tuning": {"num_virtual_tokens": 5, "init": "random"},
              "p_tuning": {"num_virtual_tokens": 4}}[method]
        model = build_ours(Row(method, method, family, kw), base)
        perturb(model)
    assert kv_cache_exact(model)
    cfg = DecodingSpec(strategy=strategy, max_new_tokens=9, temperature=1.0, top_k=20, seed=3)
    io = LMIO(kind="causal", pad_id=0, eos_id=1)
    with torch.no_grad():
        assert generate(model, io, SOURCES, cfg) == _full(model, io, cfg)


def test_prefix_tuning_keeps_the_full_rerun():
    model = build_ours(Row("prefix_tuning", "prefix_tuning", "llama-lm", {"num_virtual_tokens": 3}),
                       make_base("llama-lm"))
    assert not kv_cache_exact(model)


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
def test_prompt_seeded_cache_gives_the_prepends_logits(method):
    """The first cached forward's last-position logits equal the right-padded prepend's, per row."""
    kw = {"num_virtual_tokens": 5, "init": "random"} if method == "prompt_tuning" else {"num_virtual_tokens": 4}
    model = build_ours(Row(method, method, "llama-lm", kw), make_base("llama-lm")).eval()
    perturb(model)
    n = max(len(s) for s in SOURCES)
    left = torch.tensor([[0] * (n - len(s)) + s for s in SOURCES])
    lmask = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in SOURCES])
    right = torch.tensor([s + [0] * (n - len(s)) for s in SOURCES])
    rmask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in SOURCES])
    with torch.no_grad():
        cached = model(input_ids=left, attention_mask=lmask, use_cache=True).logits[:, -1]
        full = model(input_ids=right, attention_mask=rmask).logits
        last = full[torch.arange(len(SOURCES)), full.shape[1] - n + torch.tensor([len(s) - 1 for s in SOURCES])]
    torch.testing.assert_close(cached, last, atol=1e-5, rtol=1e-5)
