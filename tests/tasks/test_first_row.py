"""The row-0 readout of pooled classifiers (tasks/classification/readout.py) is exact: the same
logits and gradients as the full last layer, for every method, with a padded row."""

from __future__ import annotations

import copy

import pytest
import torch

from peft_ray.tasks.classification.readout import first_row_readout
from tests.methods.families import make_base, make_inputs
from tests.methods.helpers import build_ours, perturb
from tests.methods.matrix import Row

METHODS = {
    "prompt_tuning": {"num_virtual_tokens": 3, "init": "random"},
    "p_tuning": {"num_virtual_tokens": 3},
    "prefix_tuning": {"num_virtual_tokens": 3},
    "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value", "dense"]},
    "ia3": {"target_modules": ["key", "value", "output.dense"], "feedforward_modules": ["output.dense"]},
}


def _logits_and_grads(model, batch, labels):
    model.zero_grad()
    out = model(**batch)
    torch.nn.functional.cross_entropy(out.logits, labels).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach(), grads


@pytest.mark.parametrize("method", sorted(METHODS))
def test_row0_readout_gives_the_full_layers_logits_and_gradients(method):
    full = build_ours(Row(method, method, "bert-cls", METHODS[method]), make_base("bert-cls"))
    perturb(full)
    fast = copy.deepcopy(full)
    assert first_row_readout(fast.base)
    batch, labels = make_inputs("bert-cls"), torch.tensor([0, 2])
    logits, grads = _logits_and_grads(full, batch, labels)
    rows = []
    last = fast.base.bert.encoder.layer[-1].attention.self
    last.register_forward_hook(lambda m, args, out: rows.append(out[0].shape[1]))
    logits_fast, grads_fast = _logits_and_grads(fast, batch, labels)
    # the last layer's attention ran for row 0's query alone (prefix tuning's wrapper: all rows)
    assert rows == [batch["input_ids"].shape[1] if method == "prefix_tuning" else 1], rows
    torch.testing.assert_close(logits_fast, logits, atol=1e-5, rtol=1e-5)
    assert grads.keys() == grads_fast.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads_fast[name], grads[name], atol=1e-5, rtol=1e-4, msg=name)
    assert fast.state_dict().keys() == full.state_dict().keys()     # saved names unchanged


@pytest.mark.parametrize("family", ["gpt2-cls", "llama-cls", "gpt2-lm"])
def test_not_applied_where_other_rows_are_read(family):
    assert not first_row_readout(make_base(family))


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "lora", "ia3"])
def test_keys_and_values_are_read_through_associativity(method):
    """Where the last layer's key and value are linear maps (plain, or LoRA/IA3 saying so) they are
    never called: no (B, n, h) projection. With scores and probabilities that do not sum to 1 (dropout
    dropped some), the reassociated products equal projecting every row."""
    from peft_ray.tasks.classification import readout

    model = build_ours(Row(method, method, "bert-cls", METHODS[method]), make_base("bert-cls"))
    assert first_row_readout(model.base)
    last = model.base.bert.encoder.layer[-1].attention.self
    called = []
    for m in (last.key, last.value):
        m.register_forward_hook(lambda *a: called.append(1))
    model.train()(**make_inputs("bert-cls"))
    assert not called

    torch.manual_seed(0)
    heads, d, D, n = 3, 4, 12, 5
    key, value = torch.nn.Linear(D, heads * d), torch.nn.Linear(D, heads * d)
    h, q = torch.randn(2, n, D), torch.randn(2, heads, 1, d)
    probs = torch.rand(2, heads, 1, n)                       # not normalised
    k = key(h).view(2, n, heads, d).transpose(1, 2)
    v = value(h).view(2, n, heads, d).transpose(1, 2)
    torch.testing.assert_close(readout._scores(key, q, h), q @ k.transpose(-1, -2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(readout._context(value, probs, h), (probs @ v)[:, :, 0], atol=1e-5, rtol=1e-5)
    key.weight.ds_id = 7                                     # a ZeRO-3 partition: the module is called
    torch.testing.assert_close(readout._scores(key, q, h), q @ k.transpose(-1, -2))


def test_lora_with_training_dropout_or_dora_projects_every_row():
    """LoRA's dropout draws a mask per row, and DoRA rescales by a norm: not one linear map, so the
    readout calls the layer (and stays exact, as the first test checks for plain LoRA)."""
    for cfg in ({"lora_dropout": 0.1}, {"use_dora": True}):
        model = build_ours(Row("lora", "lora", "bert-cls", {**METHODS["lora"], **cfg}), make_base("bert-cls"))
        layer = model.base.bert.encoder.layer[-1].attention.self.value
        assert layer.train().linear_map() is None, cfg
    assert layer.eval().linear_map() is None              # DoRA, in eval too
