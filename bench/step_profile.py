"""Where one training step's time goes, peft-ray against HF PEFT, on the same real batches.

    python bench/step_profile.py --data ../shared/data/sst2 --out bench/results/step_profile.json

bench/loop_floor.py bounds a step from below (its products and attention alone). This splits the
measured steps themselves: torch's profiler records every op of `--repeats` steps of each side
(after warm-up, sides alternated per batch), and each op's own time goes to a category: the
matrix products (`mm`, `addmm`, `bmm`, and oneDNN's `_linear_pointwise`, through which peft-ray's
frozen projections run; their floating-point work counted from the recorded shapes,
so GFLOP/s says how close to the machine's rate they run), attention's softmax or SDPA kernel,
GELU, LayerNorm, copies (layout changes and `addmm`'s bias broadcast), adds and multiplies, and
the rest (optimizer, embeddings, the loss, Python and autograd's own work). `gemm peak` is
`torch.addmm` alone at an FFN shape of the batch, timed in the same run: the rate the products
could reach here. Profiling adds a little to every op, so the step times read slightly above
bench/step_vs_hf.py's.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, Tuple

sys.path.append(str(Path(__file__).resolve().parent))   # for _common when loaded by path (tests), step_vs_hf
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

CATEGORIES = {
    # oneDNN's product (peft_ray_kernels.onednn) is how peft-ray's frozen projections run on the CPU.
    "products": ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise"),
    "attention": ("aten::_softmax", "aten::_softmax_backward_data",
                  "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "gelu": ("aten::gelu", "aten::gelu_backward"),
    "layernorm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "copies": ("aten::copy_",),
    "add/mul": ("aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::addcmul_", "aten::sum"),
}


def product_flops(name: str, shapes) -> int:
    """Floating-point operations of one matrix product from its recorded input shapes."""
    if name == "aten::mm":
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2 * m * k * n
    if name == "aten::addmm":
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2 * m * k * n
    if name == "aten::bmm":
        (b, m, k), (_, _, n) = shapes[0], shapes[1]
        return 2 * b * m * k * n
    if name == "mkldnn::_linear_pointwise":   # x (..., k) times W^T, W (n, k)
        x, (n, k) = shapes[0], shapes[1]
        return 2 * math.prod(x[:-1]) * k * n
    return 0


def split_time(events: Iterable, steps: int) -> Tuple[Dict[str, float], float]:
    """(ms per step by category, product GFLOP per step) from a profile's events."""
    where = {op: cat for cat, ops in CATEGORIES.items() for op in ops}
    ms: Dict[str, float] = collections.Counter()
    flops = 0
    for e in events:
        cat = where.get(e.name)
        if cat is None:
            continue
        ms[cat] += e.self_cpu_time_total / 1000 / steps
        if cat == "products" and e.input_shapes:
            flops += product_flops(e.name, e.input_shapes)
    return dict(ms), flops / steps / 1e9


def profile_steps(step, batch: dict, repeats: int) -> Dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t0 = time.perf_counter()
        for _ in range(repeats):
            step(batch)
        wall = (time.perf_counter() - t0) / repeats * 1000
    ms, gflop = split_time(prof.events(), repeats)
    ms["rest"] = max(0.0, wall - sum(ms.values()))
    return {"step_ms": wall, "ms": ms, "gflop": gflop,
            "gflop_per_s": gflop / (ms.get("products", 0.0) / 1000) if ms.get("products") else 0.0}


def gemm_peak(rows: int, hidden: int = 384, ffn: int = 1536, repeats: int = 10) -> float:
    """GFLOP/s of torch.addmm alone at the FFN up-projection's shape of `rows` tokens."""
    x, w, b = torch.randn(rows, hidden), torch.randn(ffn, hidden), torch.randn(ffn)
    for _ in range(3):
        torch.addmm(b, x, w.t())
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.addmm(b, x, w.t())
    return 2 * rows * hidden * ffn * repeats / (time.perf_counter() - t0) / 1e9


def run(method: str, data: str, points: int, repeats: int, threads: int) -> list:
    from _common import length_grouped_batches
    from step_vs_hf import ours, theirs

    torch.set_num_threads(threads)
    tok, ours_step = ours(method, data)
    sides = {"peft_ray": ours_step, "hf_peft": theirs(method)}
    spread = length_grouped_batches(tok, data, points + 2)[1:-1]     # the quantiles between the extremes
    rows = []
    for i, b in enumerate(spread):
        batch = {**b, "labels": torch.arange(len(b["input_ids"])) % 2}
        for step in sides.values():       # warm-up: first calls allocate and pick kernels
            step(batch)
            step(batch)
        order = list(sides.items()) if i % 2 else list(sides.items())[::-1]
        for name, step in order:
            rows.append({"method": method, "side": name, "tokens": int(b["input_ids"].shape[1]),
                         **profile_steps(step, batch, repeats)})
        rows[-1]["gemm_peak"] = rows[-2]["gemm_peak"] = gemm_peak(batch["input_ids"].numel())
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"))
    ap.add_argument("--methods", default="prompt_tuning,lora")
    ap.add_argument("--points", type=int, default=3, help="batches, at the length order's quantiles")
    ap.add_argument("--repeats", type=int, default=5, help="profiled steps per batch and side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/step_profile.json")
    a = ap.parse_args()
    rows = [r for m in a.methods.split(",") for r in run(m, a.data, a.points, a.repeats, a.threads)]
    cats = [*CATEGORIES, "rest"]
    print(f"{'method':<14} {'side':<9} {'tokens':>6} {'step ms':>8} " + " ".join(f"{c:>10}" for c in cats)
          + f" {'GFLOP':>6} {'GFLOP/s':>8} {'gemm peak':>9}")
    for r in rows:
        print(f"{r['method']:<14} {r['side']:<9} {r['tokens']:>6} {r['step_ms']:>8.1f} "
              + " ".join(f"{r['ms'].get(c, 0.0):>10.1f}" for c in cats)
              + f" {r['gflop']:>6.1f} {r['gflop_per_s']:>8.0f} {r['gemm_peak']:>9.0f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "load_after": os.getloadavg()[0]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
