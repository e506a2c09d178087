"""peft_ray_kernels/onednn.py and peft_ray/methods/cpu_linear.py: frozen linear products through oneDNN, the same
answers as F.linear."""

import pytest
import torch
import torch.nn.functional as F

import peft_ray.methods.cpu_linear as cpu_linear
from peft_ray_kernels import onednn as cl

pytestmark = pytest.mark.skipif(not cl.supported(), reason="this torch has no oneDNN linear")


@pytest.fixture(autouse=True)
def onednn_on(monkeypatch):
    """On whatever the CPU (by default it is on for AMD CPUs only: onednn.available)."""
    monkeypatch.setenv("PEFT_RAY_ONEDNN", "1")


def _close(a, b, scale=1.0):
    assert a.shape == b.shape
    if b.numel() == 0:
        return
    assert (a - b).abs().max().item() <= 1e-5 * scale * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("shape,bias,strided", [((3, 7, 13), True, False), ((5, 13), False, False),
                                                ((2, 1, 13), True, True), ((0, 13), True, False)])
def test_values_and_input_gradients_equal_f_linear(shape, bias, strided):
    """Odd shapes, a batch of none, with and without bias, an input that is a transposed view."""
    torch.manual_seed(0)
    w, b = torch.randn(11, 13), (torch.randn(11) if bias else None)
    x = torch.randn(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2) if strided else torch.randn(*shape)
    x.requires_grad_(True)
    ours, ref = cl.linear(x, w, b), F.linear(x, w, b)
    assert ours.shape == ref.shape and ours.grad_fn is not None
    _close(ours, ref)
    g = torch.randn_like(ref)
    (dx,), (dx_ref,) = torch.autograd.grad(ours, [x], g), torch.autograd.grad(ref, [x], g)
    _close(dx, dx_ref)


def test_a_trained_weight_or_bias_keeps_torchs_op():
    """The weight's own gradient is not computed here, so a weight or bias that trains is F.linear's."""
    x = torch.randn(4, 6, requires_grad=True)
    for w, b in [(torch.randn(3, 6, requires_grad=True), None),
                 (torch.randn(3, 6), torch.randn(3, requires_grad=True))]:
        y = cl.linear(x, w, b)      # F.linear's (a ZeRO-3 engine earlier in the process may have wrapped it)
        assert type(y.grad_fn).__name__ != "_FrozenLinearBackward"
        y.sum().backward()
        assert (w.grad if w.requires_grad else b.grad) is not None


def test_other_dtypes_and_no_grad_inputs():
    w = torch.randn(3, 6, dtype=torch.float64)
    x = torch.randn(2, 6, dtype=torch.float64)
    assert torch.equal(cl.linear(x, w), F.linear(x, w))            # float64: torch's op
    x32, w32 = x.float(), w.float()
    with torch.inference_mode():
        _close(cl.linear(x32, w32), F.linear(x32, w32))
    y = cl.linear(x32, w32)                                         # nothing needs a gradient
    assert y.grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):               # autocast's cast is torch's op's
        assert cl.linear(x32, w32).dtype == torch.bfloat16


def test_only_frozen_linear_layers_change_and_the_model_answers_the_same():
    """A trained head keeps nn.Linear; frozen layers become CpuLinear with their state; outputs and
    the gradients of what trains are those of the unchanged model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 16), torch.nn.Linear(16, 2))
    for p in model[:3].parameters():
        p.requires_grad_(False)
    soft = torch.randn(5, 8, requires_grad=True)                    # a trained input, as a soft prompt
    ref = model(soft)
    ref_grads = torch.autograd.grad(ref.square().sum(), [soft, *model[3].parameters()])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert cpu_linear.use_cpu_linear(model) == 2
    assert [type(m).__name__ for m in model] == ["CpuLinear", "GELU", "CpuLinear", "Linear"]
    assert all(isinstance(m, torch.nn.Linear) for m in (model[0], model[2]))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    out = model(soft)
    _close(out, ref)
    grads = torch.autograd.grad(out.square().sum(), [soft, *model[3].parameters()])
    for a, b in zip(grads, ref_grads):
        _close(a, b, scale=10)


def test_the_frozen_products_take_onednns_path_and_off_gives_torchs_back():
    """The eager LoRA op's and the layers' products run through oneDNN (not a silent fallback);
    inside `off()` (the benchmark's A/B) torch's own, with the same answer."""
    from peft_ray_kernels.ops import lora_linear

    x = torch.randn(3, 5, 8, requires_grad=True)
    w, a, b = torch.randn(6, 8), torch.randn(2, 8, requires_grad=True), torch.randn(6, 2, requires_grad=True)
    assert type(cl.linear(x, w).grad_fn).__name__ == "_FrozenLinearBackward"
    calls = []
    real = cl.product
    try:
        cl.product = lambda *args: calls.append(1) or real(*args)
        y = lora_linear(x, w, a, b, 0.5, backend="torch")
        y.sum().backward()
        assert len(calls) == 2                                  # forward x W^T + b and backward g W
        with cl.off():
            assert type(cl.linear(x, w).grad_fn).__name__ != "_FrozenLinearBackward"
            y_off = lora_linear(x, w, a, b, 0.5, backend="torch")
        assert len(calls) == 2
    finally:
        cl.product = real
    _close(y, y_off)


def test_the_environment_can_turn_it_off(monkeypatch):
    x, w = torch.randn(2, 5, 8, requires_grad=True), torch.randn(3, 8)
    monkeypatch.setenv("PEFT_RAY_ONEDNN", "0")
    assert not cl.available() and type(cl.linear(x, w).grad_fn).__name__ != "_FrozenLinearBackward"
    monkeypatch.setenv("PEFT_RAY_ONEDNN", "1")
    assert type(cl.linear(x, w).grad_fn).__name__ == "_FrozenLinearBackward"


def test_by_default_it_is_on_where_it_was_measured_faster(monkeypatch):
    """AMD: oneDNN's product (Zen 4, 1.09-1.11x a step); Intel: MKL's (a Xeon with AVX-512 and AMX,
    1.14-1.16x a step the other way); a CPU never measured keeps torch's own."""
    monkeypatch.delenv("PEFT_RAY_ONEDNN")
    for vendor, on in (("AuthenticAMD", True), ("GenuineIntel", False), ("", False)):
        monkeypatch.setattr(cl, "cpu_vendor", lambda v=vendor: v)
        assert cl.available() is on
