"""peft_ray/cpu_attention.py: the plain math where it is faster, SDPA elsewhere, the same answers."""

import types

import pytest
import torch

import peft_ray.cpu_attention as ca
import peft_ray.fast_dropout as fd


def _qkv(B, H, n, d, groups=1, q_len=None):
    torch.manual_seed(0)
    q = torch.randn(B, H, q_len or n, d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, H // groups, n, d, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, H // groups, n, d, dtype=torch.float64, requires_grad=True)
    return q, k, v


def _same(ours, ref, inputs):
    assert (ours - ref).abs().max().item() < 1e-6   # the softmax runs in fp32, as in HF eager
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(ours, inputs, g)
    ref_grads = torch.autograd.grad(ref, inputs, g)
    assert max((a - b).abs().max().item() for a, b in zip(grads, ref_grads)) < 1e-6


@pytest.mark.parametrize("causal,gqa,q_len", [(False, 1, None), (True, 1, None), (True, 3, None), (False, 1, 1),
                                              (True, 3, 1), (False, 3, None), (False, 3, 1), (False, 2, 2)])
def test_math_path_equals_sdpa(causal, gqa, q_len, monkeypatch):
    """Values and gradients equal transformers' SDPA: a padding mask (bool) or none (causal), grouped
    K/V heads, and one query row (the pooled readout, decoding)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    used = []
    monkeypatch.setattr(ca, "_use_math", lambda *a: used.append(1) or True)
    B, H, n, d = 2, 6, 7, 5
    q, k, v = _qkv(B, H, n, d, gqa, q_len)
    mask = None if causal else torch.tensor([[1] * n, [1] * 4 + [0] * 3], dtype=torch.bool)[:, None, None, :].expand(
        B, 1, q.shape[2], n)
    module = types.SimpleNamespace(is_causal=causal, num_key_value_groups=gqa, training=True)
    ours, _ = ca.attention(module, q, k, v, mask, dropout=0.0, scaling=0.3)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=0.3)
    assert used
    _same(ours, ref, (q, k, v))


@pytest.mark.parametrize("gqa", [1, 3])
def test_a_mask_per_head_reaches_its_own_head(gqa, monkeypatch):
    """A (B, heads, q, k) mask: each query head keeps its own row of it when grouped heads share K/V."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    monkeypatch.setattr(ca, "_use_math", lambda *a: True)
    B, H, n, d = 2, 6, 7, 5
    q, k, v = _qkv(B, H, n, d, gqa)
    mask = torch.rand(B, H, n, n, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[..., 0] = True                  # every row keeps one key
    module = types.SimpleNamespace(is_causal=False, num_key_value_groups=gqa, training=True)
    ours, _ = ca.attention(module, q, k, v, mask, scaling=0.3)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.3)
    _same(ours, ref, (q, k, v))


def test_dropout_goes_through_the_fast_mask(monkeypatch):
    """With dropout on, the math runs at any length, and the probabilities take fast_dropout's mask;
    with the mask keeping everything it is SDPA's answer."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    seen = []
    monkeypatch.setattr(ca, "fast_dropout", lambda x, p: seen.append((tuple(x.shape), p)) or x)
    q, k, v = _qkv(1, 2, 300, 4)
    module = types.SimpleNamespace(is_causal=False, training=True)
    ours, _ = ca.attention(module, q, k, v, None, dropout=0.1, scaling=0.5)
    assert seen == [((1, 2, 300, 300), 0.1)]
    ref, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.0, scaling=0.5)
    _same(ours, ref, (q, k, v))


def test_long_sequences_and_unknown_arguments_go_to_sdpa(monkeypatch):
    calls = []
    import transformers.integrations.sdpa_attention as sa

    real = sa.sdpa_attention_forward
    monkeypatch.setattr(sa, "sdpa_attention_forward", lambda *a, **kw: calls.append(a[1].shape[2]) or real(*a, **kw))
    module = types.SimpleNamespace(is_causal=False, training=False)
    for n in (ca.math_up_to(4), ca.math_up_to(4) + 1):
        ca.attention(module, *_qkv(1, 2, n, 4), None, scaling=0.5)
    assert calls == [ca.math_up_to(4) + 1]
    ca.attention(module, *_qkv(1, 2, 8, 4), None, scaling=0.5, position_bias=torch.zeros(1, 2, 8, 8))
    assert calls[-1] == 8
    causal = types.SimpleNamespace(is_causal=True, training=False)
    ca.attention(causal, *_qkv(1, 2, 8, 4, q_len=3), None, scaling=0.5)   # SDPA's own alignment of that case
    assert calls[-1] == 3


def _tiny(family):
    import transformers as T

    torch.manual_seed(0)
    if family == "bert":
        return T.BertForSequenceClassification(T.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    if family == "roberta":
        return T.RobertaForSequenceClassification(T.RobertaConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=1))
    if family in ("mistral", "qwen2"):
        cls, cfg = ((T.MistralForCausalLM, T.MistralConfig) if family == "mistral" else
                    (T.Qwen2ForCausalLM, T.Qwen2Config))
        return cls(cfg(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=32))
    if family == "gpt2":
        return T.GPT2LMHeadModel(T.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0,
                                              embd_pdrop=0.0, attn_pdrop=0.0))
    return T.LlamaForCausalLM(T.LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, intermediate_size=32))


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("family", ca.FAMILIES)
def test_models_use_it_and_their_answers_are_unchanged(family, padded, monkeypatch):
    """Only the attention modules' configs change (the saved config and mask creation stay "sdpa");
    logits in eval, and a training step's gradients, equal SDPA's: with a padded row (a mask) and
    without (causal models then get none, and the math makes the causal pattern itself)."""
    model = _tiny(family)
    ids = torch.randint(3, 50, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]) if padded else torch.ones(2, 7, dtype=torch.long)
    before = model.eval()(input_ids=ids, attention_mask=mask).logits
    model.train()
    model(input_ids=ids, attention_mask=mask).logits.sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    assert ca.use_cpu_attention(model) > 0
    assert ca.use_cpu_attention(model) == 0         # idempotent: nothing left to switch
    assert model.config._attn_implementation == "sdpa"
    assert {m.config._attn_implementation for m in model.modules() if type(m).__name__.endswith("Attention")
            and hasattr(m, "config")} == {ca.NAME}
    real, chose = ca._use_math, []
    monkeypatch.setattr(ca, "_use_math", lambda *a: chose.append(real(*a)) or chose[-1])
    assert torch.allclose(model.eval()(input_ids=ids, attention_mask=mask).logits, before, atol=1e-5)
    model.train()
    model(input_ids=ids, attention_mask=mask).logits.sum().backward()
    assert all(torch.allclose(p.grad, ref[n], atol=1e-5) for n, p in model.named_parameters())
    assert chose and all(chose)                      # the math ran in every layer


def test_bert_dropout_reaches_the_attention_probabilities():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, num_labels=2)
    model = BertForSequenceClassification(cfg).train()
    fd.use_fast_dropout(model)
    ca.use_cpu_attention(model)
    ids, mask = torch.randint(0, 50, (2, 7)), torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    seen = []
    orig = ca.fast_dropout
    try:
        ca.fast_dropout = lambda x, p: seen.append(tuple(x.shape)) or orig(x, p)
        model(input_ids=ids, attention_mask=mask).logits.sum().backward()
    finally:
        ca.fast_dropout = orig
    assert (2, 2, 7, 7) in seen
