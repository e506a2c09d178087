"""Backend selection, the interpreter error, and import hygiene of the `kernels` package."""
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from peft_ray_kernels import ops as kernels

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(code: str, env_drop=("TRITON_INTERPRET",)) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _inputs():
    return torch.randn(4, 24), torch.randn(2, 5, 24), torch.randn(16, 24), torch.randn(16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_triton_on_cpu_without_interpreter_raises_clear_error():
    code = ("import torch; from peft_ray_kernels import ops as kernels\n"
            "p, x, w = torch.randn(4, 24), torch.randn(2, 5, 24), torch.randn(16, 24)\n"
            "kernels.prompt_concat_linear(p, x, w, backend='triton')\n")
    proc = _run(code)
    assert proc.returncode != 0
    assert "RuntimeError" in proc.stderr and "TRITON_INTERPRET=1" in proc.stderr and 'backend="torch"' in proc.stderr


def test_import_has_no_side_effects():
    code = ("import os, sys; before = dict(os.environ)\n"
            "import torch; from peft_ray_kernels import ops as kernels\n"
            "assert 'triton' not in sys.modules, 'kernels imported triton eagerly'\n"
            "assert dict(os.environ) == before, 'kernels changed the environment'\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr


def test_import_and_torch_backend_work_without_triton():
    code = ("import sys; sys.modules['triton'] = None  # simulate triton not installed\n"
            "import torch; from peft_ray_kernels import ops as kernels\n"
            "p, x, w = torch.randn(4, 24), torch.randn(2, 5, 24), torch.randn(16, 24)\n"
            "assert kernels.prompt_concat_linear(p, x, w, backend='torch').shape == (2, 9, 16)\n"
            "assert kernels.prompt_concat_linear(p, x, w).shape == (2, 9, 16)\n"
            "try:\n    kernels.prompt_concat_linear(p, x, w, backend='triton')\n"
            "except RuntimeError as e:\n    assert 'triton' in str(e)\nelse:\n    raise SystemExit('no error')\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_auto_on_cpu_equals_reference():
    """Equal to float precision, not bitwise: the CPU path projects the prompt rows apart from the
    token rows, and a multi-threaded GEMM splits different row counts differently (bitwise equality
    held only once an earlier test had left torch at one thread)."""
    p, x, w, b = _inputs()
    close = dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(kernels.prompt_concat_linear(p, x, w, b), kernels.prompt_concat_linear_ref(p, x, w, b),
                               **close)
    q = torch.randn(4, 16)
    torch.testing.assert_close(kernels.prefix_concat_linear(q, x, w, b), kernels.prefix_concat_linear_ref(q, x, w, b),
                               **close)
    a, bb = torch.randn(3, 24), torch.randn(16, 3)
    torch.testing.assert_close(kernels.lora_linear(x, w, a, bb, 2.0, b), kernels.lora_linear_ref(x, w, a, bb, 2.0, b),
                               **close)


@pytest.mark.parametrize("call", [
    lambda p, x, w, b: kernels.prompt_concat_linear(p, x, w, b, backend="cuda"),
    lambda p, x, w, b: kernels.prefix_concat_linear(torch.randn(4, 16), x, w, b, backend="Triton"),
    lambda p, x, w, b: kernels.lora_linear(x, w, torch.randn(3, 24), torch.randn(16, 3), 1.0, backend=""),
])
def test_invalid_backend_raises_value_error(call):
    with pytest.raises(ValueError, match="auto, torch, triton"):
        call(*_inputs())


@pytest.mark.parametrize("op", ["prompt", "prefix", "lora"])
def test_fused_ops_take_fp32_weights_under_autocast(device, op):
    """Autocast does not reach custom autograd Functions: the ops cast their inputs as autocast
    casts a linear's, so fp32 weights meet half-precision activations (a TypeError before).
    bf16 on a GPU; fp16 on the CPU, where the Triton interpreter's tl.dot is wrong on bf16."""
    half = torch.bfloat16 if device.type == "cuda" else torch.float16
    p, x, w, b = (t.to(device) for t in _inputs())
    A, B = torch.randn(3, 24, device=device) / 5, torch.randn(16, 3, device=device) / 5
    calls = {"prompt": lambda bk, t: kernels.prompt_concat_linear(t["p"], t["x"], t["w"], t["b"], backend=bk),
             "prefix": lambda bk, t: kernels.prefix_concat_linear(t["p"][:, :16], t["x"], t["w"], t["b"], backend=bk),
             "lora": lambda bk, t: kernels.lora_linear(t["x"], t["w"], t["A"], t["B"], 2.0, t["b"], backend=bk)}
    outs = {}
    for bk in ("triton", "torch"):
        t = {k: v.clone().requires_grad_() for k, v in dict(p=p, x=x.to(half), w=w, b=b, A=A, B=B).items()}
        with torch.autocast(device.type, dtype=half):
            y = calls[op](bk, t)
        y.float().sum().backward()
        outs[bk] = (y, t)
    y, t = outs["triton"]
    assert y.dtype == half
    torch.testing.assert_close(y.float(), outs["torch"][0].float(), atol=0.1, rtol=0.05)
    for k in {"prompt": ("p",), "prefix": ("w", "p"), "lora": ("A", "B")}[op]:
        assert t[k].grad is not None and t[k].grad.dtype == torch.float32
        torch.testing.assert_close(t[k].grad, outs["torch"][1][k].grad, atol=0.2, rtol=0.05)
