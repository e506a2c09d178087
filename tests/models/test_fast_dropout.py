"""peft_ray/fast_dropout.py: the same distribution as nn.Dropout, exact gradients, reproducible."""

import pytest
import torch

from peft_ray.fast_dropout import FastDropout, dropout, keep_mask, realised_p, scaled_keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_is_one_minus_p(p):
    n = 1_000_003   # odd: the last 64-bit draw is half used
    keep = keep_mask(torch.Size([n]), p).double().mean().item()
    sigma = ((1 - p) * p / n) ** 0.5
    assert abs(keep - (1 - p)) < 5 * sigma


def test_p_is_realised_to_two_to_the_minus_16_and_never_0_or_1():
    assert realised_p(0.25) == 0.25
    assert realised_p(0.1) == 6554 / 2 ** 16 and abs(realised_p(0.1) - 0.1) < 2 ** -17
    assert realised_p(1e-9) == 2 ** -16 and realised_p(1 - 1e-9) == 1 - 2 ** -16


def test_kept_values_are_scaled_by_the_realised_keep_probability():
    x = torch.randn(64, 33, dtype=torch.float64)
    y = dropout(x, 0.1)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / (1 - realised_p(0.1)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("p", [1e-9, 0.1, 0.25, 0.5, 0.9])
def test_the_float_mask_is_the_bool_draw_times_the_scale_exactly(p):
    torch.manual_seed(5)
    scaled = scaled_keep_mask(torch.Size([3, 1001]), p)
    torch.manual_seed(5)
    keep = keep_mask(torch.Size([3, 1001]), p)
    scale = torch.tensor(1 / (1 - realised_p(p)), dtype=torch.float32)
    assert scaled.dtype == torch.float32
    assert torch.equal(scaled, torch.where(keep, scale, torch.zeros(())))
    x = torch.randn(3, 1001)
    assert torch.equal(x.mul(scaled), x.mul(keep).mul_(1 / (1 - realised_p(p))))   # what the float32 path returns


def test_other_dtypes_keep_their_precision_and_gradient():
    x = torch.randn(4, 9, dtype=torch.bfloat16, requires_grad=True)
    y = dropout(x, 0.5)
    assert y.dtype == torch.bfloat16
    kept = y != 0
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.where(kept, torch.tensor(2.0, dtype=torch.bfloat16),
                                           torch.zeros((), dtype=torch.bfloat16)))


def test_masks_are_independent_draws_and_seeded_by_torch():
    torch.manual_seed(0)
    a, b = keep_mask(torch.Size([7, 13]), 0.3), keep_mask(torch.Size([7, 13]), 0.3)
    torch.manual_seed(0)
    a2 = keep_mask(torch.Size([7, 13]), 0.3)
    assert torch.equal(a, a2) and not torch.equal(a, b)


def test_output_and_gradient_are_mask_times_scale():
    x = torch.randn(3, 5, 17, dtype=torch.float64, requires_grad=True)
    y = dropout(x, 0.25)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.allclose(x.grad, torch.where(kept, g / 0.75, torch.zeros_like(g)))


def test_expectation_is_the_input():
    x = torch.full((200_000,), 2.0)
    assert abs(dropout(x, 0.1).mean().item() - 2.0) < 0.01


def test_eval_mode_p0_and_p1():
    x = torch.randn(4, 6)
    m = FastDropout(0.3).eval()
    assert m(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_use_fast_dropout_swaps_every_dropout_and_keeps_names():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, num_labels=2)
    model = BertForSequenceClassification(cfg)
    keys = list(model.state_dict())
    n = use_fast_dropout(model)
    assert n == sum(1 for m in model.modules() if isinstance(m, torch.nn.Dropout)) > 0
    assert all(type(m) is FastDropout for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert list(model.state_dict()) == keys
    assert model.bert.encoder.layer[0].attention.self.dropout.p == 0.1   # attention kernels read p
    model.train()
    out = model(input_ids=torch.randint(0, 50, (2, 7)), labels=torch.tensor([0, 1]))
    out.loss.backward()
