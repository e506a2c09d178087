"""bench/step_profile.py's accounting on a tiny profiled step: every product's work is counted
from its recorded shapes, and the categories hold the ops they name."""
import importlib.util
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _module(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))     # the script appends bench/ to the path
    spec = importlib.util.spec_from_file_location("_bench_step_profile", ROOT / "bench" / "step_profile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_profiled_step_is_split_by_category_with_its_products_work_counted(monkeypatch):
    m = _module(monkeypatch)
    lin = torch.nn.Linear(6, 10)
    lin.weight.requires_grad_(False)
    lin.bias.requires_grad_(False)
    x = torch.randn(3, 7, 6, requires_grad=True)
    q, k = torch.randn(4, 5, 8), torch.randn(4, 8, 9)

    def step(_batch):
        y = torch.nn.functional.gelu(lin(x)).sum() + torch.bmm(q, k).softmax(-1).sum()
        y.backward()

    r = m.profile_steps(step, {}, repeats=2)
    # forward: (21 x 6) @ (6 x 10); backward: the input gradient (21 x 10) @ (10 x 6); the bmm
    assert abs(r["gflop"] - (2 * 21 * 6 * 10 * 2 + 2 * 4 * 5 * 8 * 9) / 1e9) < 1e-15
    assert {"products", "gelu", "attention"} <= set(r["ms"]) and r["step_ms"] > 0
    assert m.product_flops("aten::addmm", [[10], [21, 6], [6, 10], [], []]) == 2 * 21 * 6 * 10


def test_onednn_products_are_counted_as_products(monkeypatch):
    """peft-ray's frozen projections run through oneDNN (peft_ray_kernels.onednn): a profile that
    left them out put 80% of a step under "rest"."""
    from peft_ray_kernels import onednn

    monkeypatch.setenv("PEFT_RAY_ONEDNN", "1")    # by default on AMD CPUs only
    m = _module(monkeypatch)
    assert m.product_flops("mkldnn::_linear_pointwise", [[3, 7, 6], [10, 6], [10], [], []]) == 2 * 21 * 6 * 10
    if not onednn.available():
        return
    weight, x = torch.randn(10, 6), torch.randn(3, 7, 6, requires_grad=True)

    def step(_batch):
        onednn.linear(x, weight).sum().backward()

    r = m.profile_steps(step, {}, repeats=2)
    assert abs(r["gflop"] - 2 * (2 * 21 * 6 * 10) / 1e9) < 1e-15     # forward and the input gradient
    assert r["ms"]["products"] > 0
