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
