"""Benchmark the fused kernels against torch eager and torch.compile of the reference.

    python bench/kernel_speed.py                 # all shapes, bf16, writes results.json
    python bench/kernel_speed.py --quick --dtype fp16 --out /tmp/k.json

Providers: torch (eager cat + linear), compile (torch.compile of the same), triton.
Modes: forward, backward, full. Figures: median / p20 / p80 ms from
triton.testing.do_bench, effective TFLOP/s (the reference formulation's FLOPs, so
providers compare directly), % of a plain torch.matmul of the same size, and peak
memory (torch.cuda.max_memory_allocated above the inputs). Timing needs a GPU:
without CUDA this runs a tiny interpreter correctness check and exits 0; it never
reports interpreter timings as speed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
from dataclasses import asdict, dataclass

# The GPU machine runs this from an uninstalled copy of the tree (bench/_source_tree.py).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _source_tree  # noqa: E402

_source_tree.bind()

import torch  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PROVIDERS = ("torch", "compile", "triton")
MODES = ("forward", "backward", "full")


@dataclass
class Case:
    name: str
    op: str  # "prompt" | "prefix" | "lora"
    B: int
    n: int
    n_p: int  # prompt / prefix rows; LoRA rank r for op == "lora"
    d_in: int
    d_out: int
    grads: tuple  # which inputs require grad, as in the real training setup


def cases(quick: bool) -> list[Case]:
    # Prompt tuning: only the prompt trains (embeddings and W frozen). Prefix: x
    # carries grad from earlier layers, the prefix trains, W frozen. LoRA: x, A, B.
    full = [Case(f"cls_np{p}", "prompt", 32, 128, p, 768, 768, ("prompt",)) for p in (20, 64, 128)]
    full += [Case("llm_prompt", "prompt", 8, 2048, 32, 4096, 4096, ("prompt",)),
             Case("llama7b_prefix_kv", "prefix", 8, 2048, 32, 4096, 4096, ("prefix", "x")),
             Case("lora_d4096_r16", "lora", 8, 2048, 16, 4096, 4096, ("x", "A", "B"))]
    full += smollm2_cases()
    if not quick:
        return full
    return [full[0], Case("prefix_small", "prefix", 2, 512, 32, 4096, 4096, ("prefix", "x")),
            Case("lora_small", "lora", 2, 512, 16, 4096, 4096, ("x", "A", "B"))]


def smollm2_cases() -> list[Case]:
    """SmolLM2-135M's real shapes at its jobs' batch (8 rows of ~48 tokens, 16 virtual tokens):
    q_proj 576->576, k/v_proj 576->192 (3 KV heads x 64, GQA), gate_proj 576->1536 at r=8."""
    return [Case("smollm2_prompt_q", "prompt", 8, 48, 16, 576, 576, ("prompt",)),
            Case("smollm2_prefix_kv", "prefix", 8, 48, 16, 576, 192, ("prefix", "x")),
            Case("smollm2_lora_gate", "lora", 8, 48, 8, 576, 1536, ("x", "A", "B"))]


def check_case(case: Case, dtype, device: str = "cuda") -> dict:
    """Forward and backward of the Triton op against the reference on the same (dtype) inputs,
    the reference computed in fp32: max |error| / max |reference| per output and gradient."""
    t = make_inputs(case, dtype, device)
    ref_in = {k: v.detach().float().requires_grad_(v.requires_grad) for k, v in t.items()}
    y, y_ref = op_fn(case, "triton")(t), op_fn(case, "torch")(ref_in)
    g = torch.randn_like(y_ref)
    y.backward(g.to(y.dtype))
    y_ref.backward(g)
    rel = lambda a, b: ((a.float() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()  # noqa: E731
    out = {"output": rel(y, y_ref)}
    out.update({f"d_{k}": rel(t[k].grad, ref_in[k].grad) for k in t if t[k].requires_grad})
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    return {"case": case.name, "dtype": str(dtype).split(".")[-1], "rel_err": out, "tol": tol,
            "ok": max(out.values()) <= tol, "shape": asdict(case)}


def make_inputs(case: Case, dtype, device) -> dict:
    """Named leaf tensors for one case; those in case.grads require grad."""
    B, n, p, di, do = case.B, case.n, case.n_p, case.d_in, case.d_out
    t = {"x": torch.randn(B, n, di), "W": torch.randn(do, di) / di**0.5, "b": torch.randn(do)}
    if case.op == "prompt":
        t["prompt"] = torch.randn(p, di)
    elif case.op == "prefix":
        t["prefix"] = torch.randn(p, do)
    else:
        t["A"], t["B"] = torch.randn(p, di) / di**0.5, torch.zeros(do, p).normal_(0, 0.02)
    return {k: v.to(device, dtype).requires_grad_(k in case.grads) for k, v in t.items()}


def op_fn(case: Case, provider: str):
    """fn(**inputs) -> output for one provider."""
    from peft_ray_kernels import ops as kernels
    if case.op == "prompt":
        ref, fused = kernels.prompt_concat_linear_ref, kernels.prompt_concat_linear
        args = lambda t: (t["prompt"], t["x"], t["W"], t["b"])  # noqa: E731
    elif case.op == "prefix":
        ref, fused = kernels.prefix_concat_linear_ref, kernels.prefix_concat_linear
        args = lambda t: (t["prefix"], t["x"], t["W"], t["b"])  # noqa: E731
    else:
        ref = lambda x, W, A, B, b: kernels.lora_linear_ref(x, W, A, B, 2.0, b)  # noqa: E731
        fused = lambda x, W, A, B, b, backend: kernels.lora_linear(x, W, A, B, 2.0, b, backend=backend)  # noqa: E731
        args = lambda t: (t["x"], t["W"], t["A"], t["B"], t["b"])  # noqa: E731
    if provider == "triton":
        return lambda t: fused(*args(t), backend="triton")
    body = torch.compile(ref) if provider == "compile" else ref
    return lambda t: body(*args(t))


def flops(case: Case, mode: str) -> float:
    """FLOPs of the reference formulation (what eager torch executes)."""
    B, n, p, di, do = case.B, case.n, case.n_p, case.d_in, case.d_out
    if case.op == "lora":
        fwd = 2 * B * n * (di * do + p * (di + do))
        bwd = 2 * B * n * (do * di + p * (di + do)) + 2 * B * n * p * (di + do)  # d_x; d_A + d_B
    else:
        rows = B * (n + p) if case.op == "prompt" else B * n
        fwd = bwd = 2 * rows * di * do  # backward: the input grad (W frozen)
    return {"forward": fwd, "backward": bwd, "full": fwd + bwd}[mode]


def runner(case: Case, provider: str, mode: str, t: dict):
    """A zero-argument callable timing one mode, plus the leaves whose grads it resets."""
    fn = op_fn(case, provider)
    leaves = [v for v in t.values() if v.requires_grad]
    if mode == "forward":
        return (lambda: fn(t)), leaves
    y = fn(t)
    g = torch.randn_like(y)
    if mode == "backward":
        return (lambda: y.backward(g, retain_graph=True)), leaves
    return (lambda: fn(t).backward(g)), leaves


def measure(case: Case, provider: str, mode: str, dtype, rep_ms: int) -> dict:
    from triton.testing import do_bench
    t = make_inputs(case, dtype, "cuda")
    fn, leaves = runner(case, provider, mode, t)
    fn()  # warm-up (compiles / autotunes outside the timed region)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    p50, p20, p80 = do_bench(fn, quantiles=[0.5, 0.2, 0.8], grad_to_none=leaves, rep=rep_ms)
    tflops = flops(case, mode) / (p50 * 1e-3) / 1e12
    return dict(case=case.name, provider=provider, mode=mode, ms=p50, ms_p20=p20, ms_p80=p80,
                tflops=tflops, peak_mib=peak_mib)


def matmul_tflops(case: Case, dtype, rep_ms: int) -> float:
    """A plain GEMM of the forward's size: the '% of matmul' yardstick."""
    from triton.testing import do_bench
    rows = case.B * (case.n + (case.n_p if case.op == "prompt" else 0))
    a = torch.randn(rows, case.d_in, device="cuda", dtype=dtype)
    w = torch.randn(case.d_in, case.d_out, device="cuda", dtype=dtype)
    ms = do_bench(lambda: torch.matmul(a, w), quantiles=[0.5], rep=rep_ms)
    ms = ms[0] if isinstance(ms, (list, tuple)) else ms
    return 2 * rows * case.d_in * case.d_out / (ms * 1e-3) / 1e12


def max_error(case: Case, dtype) -> float:
    """Forward |triton - torch| on this case, recorded next to the timings."""
    t = make_inputs(case, dtype, "cuda")
    with torch.no_grad():
        return (op_fn(case, "triton")(t).float() - op_fn(case, "torch")(t).float()).abs().max().item()


def bench_case(case: Case, dtype, rep_ms: int) -> list[dict]:
    mm = matmul_tflops(case, dtype, rep_ms)
    err, rows = max_error(case, dtype), []
    for mode in MODES:
        for provider in PROVIDERS:
            try:
                r = measure(case, provider, mode, dtype, rep_ms)
            except Exception as e:  # e.g. torch.compile unavailable: record, keep going
                r = dict(case=case.name, provider=provider, mode=mode, error=f"{type(e).__name__}: {e}"[:200])
            r.update(pct_matmul=100 * r["tflops"] / mm if "tflops" in r else None, matmul_tflops=mm,
                     triton_max_abs_err=err, shape=asdict(case))
            rows.append(r)
        torch.cuda.empty_cache()
    return rows


def print_table(rows: list[dict]) -> None:
    eager = {(r["case"], r["mode"]): r.get("ms") for r in rows if r["provider"] == "torch"}
    print(f"{'case':<20}{'mode':<10}{'provider':<9}{'ms p50':>9}{'p20-p80':>16}{'TFLOP/s':>9}"
          f"{'%matmul':>9}{'peak MiB':>10}{'vs eager':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<20}{r['mode']:<10}{r['provider']:<9}  ERROR {r['error'][:60]}")
            continue
        base = eager.get((r["case"], r["mode"]))
        speed = f"{base / r['ms']:.2f}x" if base else "-"
        print(f"{r['case']:<20}{r['mode']:<10}{r['provider']:<9}{r['ms']:>9.3f}"
              f"{r['ms_p20']:>8.3f}-{r['ms_p80']:<7.3f}{r['tflops']:>9.1f}{r['pct_matmul']:>8.0f}%"
              f"{r['peak_mib']:>10.1f}{speed:>9}")


def smoke_check() -> bool:
    """Tiny fp32 forward + backward check of every op through the Triton CPU interpreter."""
    torch.manual_seed(0)
    ok = True
    for case in (Case("prompt", "prompt", 2, 5, 3, 24, 40, ("prompt", "x", "W", "b")),
                 Case("prefix", "prefix", 2, 5, 3, 24, 40, ("prefix", "x", "W", "b")),
                 Case("lora", "lora", 2, 5, 4, 24, 40, ("x", "A", "B"))):
        t = make_inputs(case, torch.float32, "cpu")
        t_ref = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in t.items()}
        y, y_ref = op_fn(case, "triton")(t), op_fn(case, "torch")(t_ref)
        y.sum().backward()
        y_ref.sum().backward()
        errs = [(y - y_ref).abs().max().item()] + [(t[k].grad - t_ref[k].grad).abs().max().item()
                                                    for k in t if t[k].requires_grad]
        ok &= max(errs) < 1e-4
        print(f"  smoke {case.name:<7} max |triton - torch| over output and grads = {max(errs):.2e}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16", help="input dtype (accumulation is fp32)")
    ap.add_argument("--out", default="results.json", help="where to write the JSON results")
    ap.add_argument("--quick", action="store_true", help="one small case per op and shorter timing runs")
    ap.add_argument("--check", action="store_true", help="correctness only: every case in fp32 and bf16, "
                    "forward and backward against the reference; exit 1 on a failure")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        return no_gpu()
    if args.check:
        rows = [check_case(c, d) for c in cases(False) for d in (torch.float32, torch.bfloat16)]
        for r in rows:
            worst = max(r["rel_err"], key=r["rel_err"].get)
            print(f"{r['case']:<20}{r['dtype']:<10}{'ok' if r['ok'] else 'FAIL':<6}worst {worst} "
                  f"{r['rel_err'][worst]:.2e} (tol {r['tol']:.0e})")
        pathlib.Path(args.out).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), results=rows), indent=1))
        return 0 if all(r["ok"] for r in rows) else 1
    dtype, rep_ms = DTYPES[args.dtype], 25 if args.quick else 100
    rows = [r for case in cases(args.quick) for r in bench_case(case, dtype, rep_ms)]
    print_table(rows)
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, dtype=args.dtype, quick=args.quick)
    pathlib.Path(args.out).write_text(json.dumps(dict(meta=meta, results=rows), indent=1))
    print(f"wrote {args.out}")
    return 0


def no_gpu() -> int:
    print("No CUDA device: kernel timing needs a GPU (interpreter timings are not speed), so no "
          "benchmark was run and no JSON was written.")
    if importlib.util.find_spec("triton") is None:
        print("triton is not installed: skipping the smoke check.")
        return 0
    os.environ["TRITON_INTERPRET"] = "1"  # script-only; must precede the first kernel import
    print("Running a tiny correctness smoke check through the Triton CPU interpreter:")
    ok = smoke_check()
    print("smoke check passed" if ok else "smoke check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
