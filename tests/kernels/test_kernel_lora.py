"""lora_linear vs x W^T + b + s (x A^T) B^T, forward and gradients (covering subset)."""
import pytest
import torch

from peft_ray_kernels.ops import lora_linear, lora_linear_ref

# (leading shape, d_in, d_out, r, bias, scaling)
CASES = [
    ((13,), 24, 24, 1, True, 2.0),
    ((3, 13), 24, 96, 4, False, 0.5),
    ((1, 1), 96, 24, 16, True, 1.0),
    ((3, 128), 96, 384, 8, True, 0.25),
    ((128,), 384, 96, 20, False, 2.0),  # r not a power of two and > 16 -> BLOCK_R = 32
    ((3, 13), 384, 384, 16, True, 0.125),
    ((2, 3, 7), 96, 96, 2, False, 1.5),
    ((1,), 384, 24, 3, True, 1.0),
]


def make_inputs(lead, d_in, d_out, r, bias, device):
    x = torch.randn(*lead, d_in, device=device)
    w = torch.randn(d_out, d_in, device=device) / d_in**0.5
    a = torch.randn(r, d_in, device=device) / d_in**0.5
    b_ = torch.randn(d_out, r, device=device)
    bias_t = torch.randn(d_out, device=device) if bias else None
    return [x, w, a, b_, bias_t]


def op_and_ref(scaling):
    def op(x, w, a, b, bias, backend):
        return lora_linear(x, w, a, b, scaling, bias, backend=backend)

    def ref(x, w, a, b, bias):
        return lora_linear_ref(x, w, a, b, scaling, bias)
    return op, ref


@pytest.mark.parametrize("lead,d_in,d_out,r,bias,scaling", CASES)
def test_forward_and_grads_fp32(lead, d_in, d_out, r, bias, scaling, device, check_op):
    op, ref = op_and_ref(scaling)
    tensors = make_inputs(lead, d_in, d_out, r, bias, device)
    check_op(op, ref, tensors, requires=[True, False, True, True, False])  # W, b frozen as in LoRA


@pytest.mark.parametrize("req", [[True, True, True, True, True], [False, False, True, True, False],
                                 [True, False, False, False, False], [False, False, True, False, True]])
def test_any_grad_subset(req, device, check_op):
    op, ref = op_and_ref(0.5)
    check_op(op, ref, make_inputs((3, 13), 24, 96, 4, True, device), requires=req)


def test_frozen_weight_returns_none(device):
    from peft_ray_kernels.lora import lora_backward
    x, w, a, b, bias = make_inputs((13,), 24, 96, 4, True, device)
    h, g = x @ a.t(), torch.randn(13, 96, device=device)
    d_x, d_w, d_a, d_b, d_bias = lora_backward(g, x, w, a, b, h, 0.5, (True, False, True, True, False, False), True)
    assert d_w is None and d_bias is None and d_x.shape == x.shape and d_a.shape == a.shape


@pytest.mark.parametrize("lead", [(3, 13), (13,)])
def test_leading_dims_shape(lead, device):
    x, w, a, b, bias = make_inputs(lead, 24, 96, 4, True, device)
    y = lora_linear(x, w, a, b, 0.5, bias, backend="triton")
    assert y.shape == (*lead, 96)
    torch.testing.assert_close(y, lora_linear_ref(x, w, a, b, 0.5, bias), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16/fp16 Triton kernels need a GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lead,d_in,d_out,r,bias,scaling", [CASES[1], CASES[3], CASES[5]])
def test_low_precision_gpu(dtype, lead, d_in, d_out, r, bias, scaling, device, check_op):
    op, ref = op_and_ref(scaling)
    tensors = make_inputs(lead, d_in, d_out, r, bias, device)
    check_op(op, ref, tensors, requires=[True, False, True, True, False], dtype=dtype, ref_dtype=torch.float32)


def test_validation(device):
    x, w, a, b, bias = make_inputs((3, 13), 24, 96, 4, True, device)
    with pytest.raises(ValueError, match="lora_B must be"):
        lora_linear(x, w, a, b.t(), 0.5, bias, backend="triton")
    with pytest.raises(ValueError, match="lora_A must be"):
        lora_linear(x, w, a[:, :5], b, 0.5, bias, backend="triton")
