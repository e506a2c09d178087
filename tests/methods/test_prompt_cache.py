"""The causal-decoder prompt cache (peft_ray/methods/causal_cache.py) gives the
input-level prepend's logits, loss and gradients: tiny Llama (GQA) and GPT-2 from config,
LM and classification heads, odd shapes, right- and left-padded rows, with and without labels."""

from __future__ import annotations

import copy

import pytest
import torch

from peft_ray.errors import SpecError
from peft_ray.methods import causal_cache
from tests.methods.families import VOCAB, make_base
from tests.methods.helpers import build_ours, perturb
from tests.methods.matrix import Row

FAMILIES = ["llama-lm", "gpt2-lm", "llama-cls", "gpt2-cls"]
SHAPES = [(1, 6, 3), (3, 11, 7), (5, 23, 13)]          # (B, n, n_p); GPT-2 here has 64 positions


def pair(family: str, n_p: int, kernels: str = "torch"):
    """(cached model, prepend-only model) with identical, perturbed trainable tensors."""
    base = make_base(family)
    row = Row("prompt", "prompt_tuning", family, {"num_virtual_tokens": n_p, "init": "random"})
    off = build_ours(row, copy.deepcopy(base), kernels=kernels, prompt_cache="off")
    on = build_ours(row, base, kernels=kernels)
    perturb(on)
    off.load_state_dict(on.state_dict())
    return on, off


def batch(family: str, B: int, n: int, labels: bool, seed: int = 1) -> dict:
    """Row 1 right-padded, row 2 left-padded (when there are such rows); LM labels carry -100s."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (B, n), generator=g)
    mask = torch.ones_like(ids)
    if B > 1:
        mask[1, n - n // 3:] = 0
    if B > 2:
        mask[2, : n // 4 + 1] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if labels and family.endswith("-lm"):
        out["labels"] = ids.masked_fill(mask == 0, -100)
    elif labels:
        out["labels"] = torch.randint(0, 3, (B,), generator=g)
    return out


def run(model, inputs: dict, counter: list):
    """Logits, loss, and the gradient of every trainable tensor after one backward."""
    model.zero_grad()
    out = model(**inputs)
    target = out.loss if out.loss is not None else out.logits.pow(2).mean()
    target.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach(), out.loss, grads, len(counter)


@pytest.fixture
def calls(monkeypatch):
    """Counts cached forwards, so no test passes because the cache silently stayed off."""
    seen, real = [], causal_cache.cached_forward
    monkeypatch.setattr(causal_cache, "cached_forward", lambda *a: seen.append(1) or real(*a))
    return seen


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)
    if b[1] is not None:
        torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=1e-5)
    assert a[2].keys() == b[2].keys() and "prompt" in a[2]
    for name, g in b[2].items():
        rel = (a[2][name] - g).abs().max() / g.abs().max().clamp_min(1e-12)
        assert rel < 1e-5, f"{name}: gradient rel diff {rel:.2e}"


@pytest.mark.parametrize("labels", [False, True], ids=["no-labels", "labels"])
@pytest.mark.parametrize("B, n, n_p", SHAPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_cache_matches_prepend(family, B, n, n_p, labels, calls):
    on, off = pair(family, n_p)
    inputs = batch(family, B, n, labels)
    ref = run(off, inputs, calls)
    assert ref[3] == 0
    got = run(on, inputs, calls)
    assert got[3] == 1, "the cached path was not taken"
    assert got[0].shape == ref[0].shape       # LM: (B, n_p + n, V), as PEFT returns
    assert_same(got, ref)


def test_training_mode_llama_uses_cache_and_matches(calls):
    """Tiny Llama has no dropout, so auto keeps the cache on in training."""
    on, off = pair("llama-lm", 7)
    on.train(), off.train()
    inputs = batch("llama-lm", 4, 17, labels=True)
    ref, got = run(off, inputs, calls), run(on, inputs, calls)
    assert got[3] == 1
    assert_same(got, ref)


def test_auto_is_off_under_dropout_and_on_forces_it(calls):
    """GPT-2 has dropout 0.1: auto would share one dropout mask over the batch, so it falls back."""
    on, _ = pair("gpt2-lm", 5)
    on.train()
    on(**batch("gpt2-lm", 2, 9, labels=True))
    assert len(calls) == 0
    on.prompt_cache = "on"
    on(**batch("gpt2-lm", 2, 9, labels=True))
    assert len(calls) == 1


def test_caller_positions_fall_back_to_prepend(calls):
    on, _ = pair("llama-lm", 3)
    inputs = batch("llama-lm", 2, 6, labels=False)
    on(**inputs, position_ids=torch.arange(9)[None])
    on(**inputs, output_hidden_states=True)
    assert len(calls) == 0


def test_matches_hf_peft_with_labels():
    """PEFT's own prompt tuning on the same Llama and prompt: same logits and loss."""
    peft = pytest.importorskip("peft")
    on, _ = pair("llama-lm", 7)
    theirs = peft.get_peft_model(make_base("llama-lm"), peft.PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=7)).eval()
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(on.prompt)
    inputs = batch("llama-lm", 3, 10, labels=True)
    ours, ref = on(**inputs), theirs(**inputs)
    torch.testing.assert_close(ours.logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.loss, ref.loss, atol=1e-6, rtol=1e-5)


def test_fusion_skipped_when_cache_can_run():
    """fused.py assumes layer 0's input starts with the prompt rows; the cache's input pass has none."""
    on, off = pair("llama-lm", 3, kernels="auto")
    q_on, q_off = on.base.model.layers[0].self_attn.q_proj, off.base.model.layers[0].self_attn.q_proj
    assert "forward" not in vars(q_on) and "forward" in vars(q_off)


def test_on_needs_a_causal_decoder():
    row = Row("prompt", "prompt_tuning", "bert-cls", {"num_virtual_tokens": 3, "init": "random"})
    with pytest.raises(SpecError, match="method.prompt_cache"):
        build_ours(row, make_base("bert-cls"), prompt_cache="on")


@pytest.mark.parametrize("family", ["llama-lm", "gpt2-lm"])
def test_loss_with_num_items_in_batch(family, calls):
    """HF Trainer passes num_items_in_batch (sum, then divide): the cached loss honours it too."""
    on, off = pair(family, 5)
    inputs = {**batch(family, 3, 9, labels=True), "num_items_in_batch": torch.tensor(40)}
    assert_same(run(on, inputs, calls), run(off, inputs, calls))
    assert len(calls) == 1
