"""Kernel tests run the real Triton kernels: on the GPU when there is one, otherwise
through Triton's CPU interpreter. TRITON_INTERPRET must be set before the kernels
are jit-decorated (first import of kernels.gemm), hence at conftest import time.
"""
import os
import pathlib
import sys

import pytest
import torch

if not torch.cuda.is_available():  # importing torch does not import triton
    os.environ["TRITON_INTERPRET"] = "1"

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) does not add the cwd
    sys.path.insert(0, str(ROOT))


def pytest_collection_finish(session):
    """The kernels under test are this checkout's: `peft_ray_kernels` is kernels/ through the
    editable install, which points at whichever checkout ran `pip install -e` last; a second clone
    would otherwise test another copy without a word (a review finding)."""
    import importlib.util

    spec = importlib.util.find_spec("peft_ray_kernels.ops")    # kernels/ is a namespace package: ask a module
    where = pathlib.Path(spec.origin).resolve().parent if spec and spec.origin else None
    if where != ROOT / "kernels":
        pytest.exit(f"peft_ray_kernels loads from {where}, not this checkout's {ROOT / 'kernels'}: "
                    f"run `pip install --no-deps -e {ROOT}` here first", returncode=2)


@pytest.fixture
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --- comparison helpers, exposed as fixtures so they work under any pytest import mode ---
# (atol as a fraction of the reference's max |value|, rtol); low precision compares
# against an fp32 reference on the same (already rounded) inputs.
TOL = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (2e-2, 2e-2), torch.float16: (4e-3, 4e-3)}


def assert_close(actual, expected, dtype, name=""):
    atol_frac, rtol = TOL[dtype]
    expected = expected.to(actual.dtype) if dtype == torch.float32 else expected
    atol = atol_frac * max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def leaves(tensors, requires, dtype=None):
    """Fresh leaf copies (optionally cast) with the given requires_grad flags."""
    out = []
    for t, r in zip(tensors, requires):
        if t is None:
            out.append(None)
            continue
        c = t.detach().clone().to(dtype or t.dtype)
        out.append(c.requires_grad_(bool(r)))
    return out


def check_op(op, ref, tensors, requires, dtype=torch.float32, ref_dtype=None):
    """Compare forward and every gradient of op(backend="triton") against ref."""
    ours = leaves(tensors, requires, dtype)
    theirs = leaves(ours, requires, ref_dtype or dtype)
    y, y_ref = op(*ours, backend="triton"), ref(*theirs)
    assert y.shape == y_ref.shape and y.dtype == ours[1].dtype
    assert_close(y, y_ref, dtype, "forward")
    grad = torch.randn_like(y_ref)
    y.backward(grad.to(y.dtype))
    y_ref.backward(grad)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a is None or not a.requires_grad:
            assert a is None or a.grad is None
            continue
        assert a.grad is not None and a.grad.shape == a.shape, f"grad {i}"
        assert_close(a.grad, b.grad, dtype, f"grad of input {i}")


@pytest.fixture(name="check_op")
def _check_op_fixture():
    return check_op
