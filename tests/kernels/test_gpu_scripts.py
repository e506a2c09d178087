"""The GPU script's parts, run here on the CPU at tiny shapes.

bench/gpu_check.sh may get one try on a lent GPU, so its Python parts must not first meet
an API change there. These run the same functions (check_case, the timing runner,
gpu_step.time_method) with the Triton interpreter and small shapes; only do_bench and the
CUDA memory counters stay GPU-only.
"""
import importlib.util
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module       # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kbench():
    return _load("kernel_speed")


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")], check=True)


@pytest.mark.parametrize("op, n_p, grads", [("prompt", 3, ("prompt",)), ("prefix", 3, ("prefix", "x")),
                                            ("lora", 4, ("x", "A", "B"))])
def test_check_case_passes_on_odd_shapes(kbench, op, n_p, grads):
    case = kbench.Case(f"tiny_{op}", op, 2, 5, n_p, 24, 40, grads)
    r = kbench.check_case(case, torch.float32, device="cpu")
    assert r["ok"], r["rel_err"]
    assert set(r["rel_err"]) == {"output", *(f"d_{g}" for g in grads)}


def test_timing_runners_and_flops_for_every_mode(kbench):
    """What bench_case hands to do_bench: every mode of the torch and triton providers runs."""
    for op, grads in (("prompt", ("prompt",)), ("lora", ("x", "A", "B"))):
        case = kbench.Case("tiny", op, 2, 5, 3, 24, 40, grads)
        for mode in kbench.MODES:
            assert kbench.flops(case, mode) > 0
            for provider in ("torch", "triton"):
                t = kbench.make_inputs(case, torch.float32, "cpu")
                fn, leaves = kbench.runner(case, provider, mode, t)
                fn()
                assert leaves


def test_gpu_step_times_every_method_on_a_tiny_llama():
    """kernels="triton" is what "auto" picks on the GPU: the fused ops inside the real model, under
    autocast, give the reference's loss (fp16 here: the Triton interpreter's tl.dot is wrong on bf16)."""
    gpu_step = _load("gpu_step")
    tiny = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    for name in gpu_step.METHODS:
        r = {k: gpu_step.time_method(name, k, 1, "cpu", warmup=0, batch=(2, 8), amp=torch.float16, **tiny)
             for k in ("torch", "triton")}
        assert r["torch"]["ms_per_step"] > 0 and r["torch"]["trainable"] == r["triton"]["trainable"] > 0
        assert r["triton"]["loss"] == pytest.approx(r["torch"]["loss"], rel=1e-2), name


def test_gpu_scripts_exit_cleanly_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the scripts would run for real")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_step.py"), "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and "No CUDA device" in out.stdout
