"""prompt_concat_linear and prefix_concat_linear vs their cat + linear references.

The full grid (n_p x n x d_in x d_out x B x shared x bias = 648 cases per op) takes
far too long in the Triton CPU interpreter on 2 cores, so CASES is a covering
subset: every value of every dimension appears, d_in != d_out in most rows, both
prompt kinds and bias / no-bias appear with every d. Only a few rows combine
n = 128 with d = 384 (the slow corner).
"""
import pytest
import torch

from peft_ray_kernels import ops as kernels
from peft_ray_kernels.ops import prefix_concat_linear, prefix_concat_linear_ref, prompt_concat_linear, prompt_concat_linear_ref

# (B, n_p, n, d_in, d_out, shared, bias)
CASES = [
    (1, 1, 1, 24, 24, True, True),
    (3, 7, 13, 24, 96, False, True),
    (3, 20, 13, 96, 24, True, False),
    (1, 7, 1, 96, 96, False, False),
    (3, 1, 13, 384, 24, True, True),
    (1, 20, 13, 24, 384, False, True),
    (3, 7, 1, 384, 96, True, False),
    (3, 20, 1, 96, 384, False, False),
    (1, 1, 128, 24, 96, True, False),
    (3, 7, 128, 96, 24, False, True),
    (1, 20, 128, 96, 96, True, True),
    (3, 1, 128, 384, 384, False, True),
    (3, 20, 128, 24, 384, True, False),
    (1, 7, 13, 384, 384, True, True),
    (3, 1, 1, 96, 24, False, False),
    (1, 20, 1, 24, 24, False, True),
    (3, 7, 13, 96, 96, True, True),
    (1, 1, 13, 384, 96, False, False),
    (3, 20, 13, 384, 24, False, True),
    (1, 7, 128, 384, 96, True, False),
]
OPS = {
    "prompt": (prompt_concat_linear, prompt_concat_linear_ref, "d_in"),
    "prefix": (prefix_concat_linear, prefix_concat_linear_ref, "d_out"),
}


def make_inputs(kind, B, n_p, n, d_in, d_out, shared, bias, device):
    width = d_in if OPS[kind][2] == "d_in" else d_out  # prompt lives in input space, prefix in output space
    rows = torch.randn(*(() if shared else (B,)), n_p, width, device=device)
    x = torch.randn(B, n, d_in, device=device)
    w = torch.randn(d_out, d_in, device=device) / d_in**0.5
    b = torch.randn(d_out, device=device) if bias else None
    return [rows, x, w, b]


@pytest.mark.parametrize("kind", list(OPS))
@pytest.mark.parametrize("B,n_p,n,d_in,d_out,shared,bias", CASES)
def test_forward_and_grads_fp32(kind, B, n_p, n, d_in, d_out, shared, bias, device, check_op):
    op, ref, _ = OPS[kind]
    tensors = make_inputs(kind, B, n_p, n, d_in, d_out, shared, bias, device)
    check_op(op, ref, tensors, requires=[True] * 4)


@pytest.mark.parametrize("kind", list(OPS))
@pytest.mark.parametrize("req_w,req_b", [(False, False), (True, False), (False, True)])
def test_weight_and_bias_grads_only_when_required(kind, req_w, req_b, device, check_op):
    op, ref, _ = OPS[kind]
    tensors = make_inputs(kind, 3, 7, 13, 24, 96, True, True, device)
    check_op(op, ref, tensors, requires=[True, True, req_w, req_b])


@pytest.mark.parametrize("kind", list(OPS))
def test_backward_returns_none_for_frozen_weight_and_bias(kind, device):
    """The layer-2 backward must skip (not just discard) d_W and d_b."""
    from peft_ray_kernels.prefix_concat import prefix_concat_backward
    from peft_ray_kernels.prompt_concat import prompt_concat_backward
    backward = prompt_concat_backward if kind == "prompt" else prefix_concat_backward
    rows, x, w, b = make_inputs(kind, 3, 7, 13, 24, 96, False, True, device)
    g = torch.randn(3, 20, 96, device=device)
    d_rows, d_x, d_w, d_b = backward(g, rows, x, w, (True, True, False, False), True)
    assert d_w is None and d_b is None and d_rows.shape == rows.shape and d_x.shape == x.shape
    _, _, d_w, d_b = backward(g, rows, x, w, (False, False, True, True), True)
    assert d_w.shape == w.shape and d_b.shape == b.shape


def test_prompt_weight_grad_kernel_not_launched_when_frozen(monkeypatch, device):
    import peft_ray_kernels.prompt_concat as pc
    calls = []
    monkeypatch.setattr(pc, "_weight_grad", lambda *a: calls.append(1))
    rows, x, w, b = make_inputs("prompt", 3, 7, 13, 24, 96, True, True, device)
    prompt_concat_linear(rows.requires_grad_(), x, w, b, backend="triton").sum().backward()
    assert calls == [] and w.grad is None and rows.grad is not None


@pytest.mark.parametrize("kind", list(OPS))
def test_strided_inputs(kind, device, check_op):
    """Transposed x, a per-sample prompt that is an expanded (stride-0) view, odd weight strides."""
    op, ref, _ = OPS[kind]
    rows, _, w, b = make_inputs(kind, 3, 7, 13, 96, 24, True, True, device)
    x = torch.randn(3, 96, 13, device=device).transpose(1, 2)  # (3, 13, 96), non-contiguous
    w = w.t().contiguous().t()  # (24, 96) with column-major strides
    ours = [t.detach().clone().requires_grad_() for t in (rows, x, w, b)]
    y = op(ours[0].expand(3, -1, -1), ours[1], ours[2], ours[3], backend="triton")
    theirs = [t.detach().clone().requires_grad_() for t in (rows, x, w, b)]
    y_ref = ref(theirs[0].expand(3, -1, -1), *theirs[1:])
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    for a, r in zip(ours, theirs):
        torch.testing.assert_close(a.grad, r.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16/fp16 Triton kernels need a GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", list(OPS))
@pytest.mark.parametrize("B,n_p,n,d_in,d_out,shared,bias", [CASES[1], CASES[11], CASES[12], CASES[13]])
def test_low_precision_gpu(kind, dtype, B, n_p, n, d_in, d_out, shared, bias, device, check_op):
    op, ref, _ = OPS[kind]
    tensors = make_inputs(kind, B, n_p, n, d_in, d_out, shared, bias, device)
    check_op(op, ref, tensors, requires=[True] * 4, dtype=dtype, ref_dtype=torch.float32)


def test_output_dtype_and_validation(device):
    rows, x, w, b = make_inputs("prompt", 2, 3, 5, 24, 96, True, True, device)
    with pytest.raises(ValueError, match="prompt must be"):
        prompt_concat_linear(rows[:, :7], x, w, b, backend="triton")
    with pytest.raises(ValueError, match="per-sample prompt has batch"):
        prompt_concat_linear(torch.randn(5, 3, 24, device=device), x, w, b, backend="triton")
    with pytest.raises(TypeError, match="weight"):
        prompt_concat_linear(rows, x, w.double(), b, backend="triton")
    assert kernels.prompt_concat_linear(rows, x, w, b, backend="triton").dtype == x.dtype
