"""Prefix tuning's text init (`method.init: text`, Li & Liang's real-word activations): before any
training, the prefixed model reads x exactly as the base model reads the text followed by x."""

from __future__ import annotations

import copy

import pytest
import torch

from peft_ray.errors import SpecError
from peft_ray.methods import get_method
from peft_ray.methods.common import BuildContext
from peft_ray.models import head_modules
from tests.methods.families import VOCAB, make_base

TEXT_IDS = [7, 11, 13, 17, 19]


class Words:
    """The one tokenizer call the text init makes: fixed ids inside the tiny vocabularies."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": TEXT_IDS}


def build(family: str, n_p: int, **cfg):
    base = make_base(family)
    ref = copy.deepcopy(base)
    method = get_method("prefix_tuning")
    config = method.config_cls(name="prefix_tuning", num_virtual_tokens=n_p, init="text",
                               init_text="any words", **cfg)
    ctx = BuildContext(tokenizer=Words(), seed=0, head_modules=head_modules(base), kernels="torch")
    return method.build(base, config, ctx).eval(), ref


@pytest.mark.parametrize("family", ["llama-lm", "gpt2-lm"])
@pytest.mark.parametrize("n_p", [5, 8, 3])   # the text exactly, repeated to fill, cut short
def test_text_prefix_equals_reading_the_text(family, n_p):
    model, ref = build(family, n_p)
    ids = (TEXT_IDS * (n_p // len(TEXT_IDS) + 1))[:n_p]
    x = torch.randint(20, VOCAB, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        full = torch.cat([torch.tensor([ids]).expand(3, -1), x], dim=1)
        theirs = ref(input_ids=full).logits[:, n_p:]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_text_init_trains_and_stays_a_plain_parameter():
    model, _ = build("llama-lm", 6)
    assert model.prefix.requires_grad and model.prefix.shape == (6, 2 * 2 * 2 * 8)   # L=2, k+v, h_kv=2, hd=8
    x = torch.randint(20, VOCAB, (2, 7))
    model.train()
    model(input_ids=x, labels=x).loss.backward()
    assert model.prefix.grad is not None and model.prefix.grad.abs().sum() > 0


def test_text_init_refuses_an_encoder_and_the_projection():
    with pytest.raises(SpecError, match="init: text for prefix tuning supports the causal families"):
        build("bert-cls", 4)
    with pytest.raises(ValueError, match="does not apply with prefix_projection"):
        get_method("prefix_tuning").config_cls(name="prefix_tuning", init="text", init_text="w",
                                               prefix_projection=True)
    with pytest.raises(ValueError, match="init: text needs method.init_text"):
        get_method("prefix_tuning").config_cls(name="prefix_tuning", init="text")
