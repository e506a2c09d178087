"""Prompt tuning's layer-0 fusion on the CPU (methods/prompt_tuning/fused.py): the shared prompt
projected once and the token rows' input gradient skipped give the plain model's logits and
gradients exactly; rows that differ and embeddings that train keep the full computation."""

import pytest
import torch

from peft_ray.methods.prompt_tuning import fused
from tests.methods.families import make_base, make_inputs, valid_logits
from tests.methods.helpers import build_ours, perturb
from tests.methods.matrix import Row

ROWS = [Row("prompt", "prompt_tuning", "bert-cls", {"num_virtual_tokens": 3, "init": "random"}),
        Row("prompt", "prompt_tuning", "llama-lm", {"num_virtual_tokens": 3, "init": "random", "prompt_cache": "off"}),
        Row("prompt", "prompt_tuning", "t5-s2s", {"num_virtual_tokens": 3, "init": "random"})]


@pytest.fixture
def splits(monkeypatch):
    """Records what each forward's split decided: (prompt rows shared, token rows detached)."""
    seen = []
    original = fused._split_rows

    def recording(h, n_p, prompt, cpu):
        rows = original(h, n_p, prompt, cpu)
        seen.append(None if rows is None else (rows[0].dim() == 2, not rows[1].requires_grad))
        return rows
    monkeypatch.setattr(fused, "_split_rows", recording)
    return seen


def _run(row: Row, kernels: str, train: bool, dropout: float = 0.0, **extra):
    model = build_ours(row, make_base(row.family), kernels=kernels, **extra)
    perturb(model)
    model.train(train)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = dropout
    batch = make_inputs(row.family)
    torch.manual_seed(0)
    logits = valid_logits(model(**batch), batch, row.family)
    logits.pow(2).mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    assert a[1].keys() == b[1].keys()
    for name, g in a[1].items():
        torch.testing.assert_close(b[1][name], g, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.family)
def test_shared_prompt_and_skipped_token_gradient_are_exact(row, train, splits):
    ref = _run(row, "torch", train)       # "torch": the plain model, no fusion
    got = _run(row, "auto", train)
    assert splits and all(s == (True, True) for s in splits), splits
    _same(ref, got)


def test_a_trained_embedding_below_keeps_the_token_gradient(splits):
    extra = {"modules_to_save": ["bert.embeddings.word_embeddings"]}
    ref = _run(ROWS[0], "torch", True, **extra)
    got = _run(ROWS[0], "auto", True, **extra)
    assert splits and all(s == (True, False) for s in splits), splits
    assert any("word_embeddings" in n for n in got[1])
    _same(ref, got)


def test_embedding_dropout_makes_rows_differ_and_runs_the_plain_linear(splits):
    got = _run(ROWS[0], "auto", True, dropout=0.5)
    assert splits and all(s is None for s in splits), splits
    assert got[1]["prompt"].abs().sum() > 0


def test_only_prompt_below_walks_the_graph():
    prompt = torch.nn.Parameter(torch.randn(2, 4))
    other = torch.nn.Parameter(torch.randn(4))
    h = torch.cat([prompt.expand(3, -1, -1), torch.randn(3, 5, 4)], 1)
    assert fused.only_prompt_below(torch.layer_norm(h, (4,)), prompt)
    assert not fused.only_prompt_below(torch.layer_norm(h + other, (4,)), prompt)
