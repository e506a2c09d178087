"""LoRA's eager CPU form (kernels/eager.py, what backend "torch"/"auto" runs on the CPU) against the
reference: forward and every gradient, odd shapes, any subset of inputs needing a gradient."""
import pytest
import torch

from peft_ray_kernels.ops import lora_linear, lora_linear_ref
from tests.kernels.test_kernel_lora import CASES, make_inputs


def _run(fn, tensors, requires, scaling):
    leaves = [None if t is None else t.detach().clone().requires_grad_(r) for t, r in zip(tensors, requires)]
    x, w, a, b, bias = leaves
    y = fn(x, w, a, b, scaling, bias)
    y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
    return y.detach(), [None if t is None or t.grad is None else t.grad for t in leaves]


def _eager(x, w, a, b, s, bias):
    return lora_linear(x, w, a, b, s, bias, backend="torch")


@pytest.mark.parametrize("lead,d_in,d_out,r,bias,scaling", CASES)
@pytest.mark.parametrize("requires", [[True, False, True, True, False], [False, False, True, True, False],
                                      [True, True, True, True, True], [False, False, False, True, True]])
def test_eager_matches_reference(lead, d_in, d_out, r, bias, scaling, requires):
    tensors = make_inputs(lead, d_in, d_out, r, bias, torch.device("cpu"))
    requires = [q and t is not None for q, t in zip(requires, tensors)]
    y, grads = _run(_eager, tensors, requires, scaling)
    y_ref, grads_ref = _run(lora_linear_ref, tensors, requires, scaling)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for name, g, g_ref in zip("x W A B bias".split(), grads, grads_ref):
        assert (g is None) == (g_ref is None), name
        if g is not None:
            torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4, msg=name)


def test_non_contiguous_input_and_autocast_fall_back_correctly():
    x, w, a, b, bias = make_inputs((5, 7), 24, 40, 3, True, torch.device("cpu"))
    xt = x.transpose(0, 1)                                          # (7, 5, 24), not contiguous
    torch.testing.assert_close(_eager(xt, w, a, b, 0.5, bias), lora_linear_ref(xt, w, a, b, 0.5, bias))
    with torch.autocast("cpu", dtype=torch.bfloat16):               # the reference path, autocast's casts
        assert _eager(x, w, a, b, 0.5, bias).dtype == torch.bfloat16
