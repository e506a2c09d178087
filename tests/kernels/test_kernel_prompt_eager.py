"""Prompt concat's eager CPU form (kernels/eager.py, what backend "torch"/"auto" runs on the CPU)
against the reference: forward and every gradient on odd shapes, shared and per-sample prompts,
any subset of inputs needing a gradient."""
import pytest
import torch

from peft_ray_kernels.ops import prompt_concat_linear, prompt_concat_linear_ref
from tests.kernels.test_kernel_concat import CASES, make_inputs

REQUIRES = [[True, True, True, True], [True, False, False, False], [False, True, False, False],
            [True, False, True, True]]


def _run(fn, tensors, requires):
    leaves = [None if t is None else t.detach().clone().requires_grad_(r) for t, r in zip(tensors, requires)]
    y = fn(*leaves)
    y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
    return y.detach(), [None if t is None else t.grad for t in leaves]


@pytest.mark.parametrize("requires", REQUIRES)
@pytest.mark.parametrize("B,n_p,n,d_in,d_out,shared,bias", CASES)
def test_eager_matches_reference(B, n_p, n, d_in, d_out, shared, bias, requires):
    tensors = make_inputs("prompt", B, n_p, n, d_in, d_out, shared, bias, torch.device("cpu"))
    requires = [q and t is not None for q, t in zip(requires, tensors)]
    y, grads = _run(lambda *t: prompt_concat_linear(*t, backend="torch"), tensors, requires)
    y_ref, grads_ref = _run(prompt_concat_linear_ref, tensors, requires)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for name, g, g_ref in zip(("P", "X", "W", "bias"), grads, grads_ref):
        assert (g is None) == (g_ref is None), name
        if g is not None:
            torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4, msg=name)


def test_non_contiguous_rows_of_one_tensor():
    """How the model calls it: the prompt and the tokens are row slices of one (B, n_p + n, d) input."""
    h = torch.randn(3, 5 + 11, 24)
    w, b = torch.randn(40, 24), torch.randn(40)
    torch.testing.assert_close(prompt_concat_linear(h[0, :5], h[:, 5:], w, b, backend="torch"),
                               prompt_concat_linear_ref(h[0, :5], h[:, 5:], w, b))
