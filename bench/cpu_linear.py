"""Frozen linear products through oneDNN (peft_ray_kernels/onednn.py; peft_ray/methods/cpu_linear.py's layers)
against torch's own (MKL `addmm`).

    python bench/cpu_linear.py --out bench/results/cpu_linear.json
    python bench/cpu_linear.py --steps 6 --threads 1      # also whole steps, as a Ray worker runs them

Part 1, per product at a job's shape (rows = batch x positions, in -> out features): MiniLM's
projections at SST-2 batch 32 with 20 soft tokens (46 positions), SmolLM2's at 16-shot batch 8
(100 positions) and its LM head at 16 scored rows. `train ms` is forward + the input's gradient
(the frozen weight gets none), `infer ms` the forward under inference_mode; the sides alternate,
best of `--rounds`; `x` is torch's time / oneDNN's.

Part 2 (`--steps N`): whole training steps of the two MiniLM SST-2 jobs (bench/step_vs_hf.py's
engine, real length-grouped batches at N points of the length order, each 3 times), every frozen
product (the CpuLinear layers and the methods' eager ops) through oneDNN or, inside
`onednn.off()`, through torch, alternated: `x (sum)` is the summed step time with torch's
products over that with oneDNN's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.append(str(Path(__file__).resolve().parent))   # for _common when loaded by path (tests)
from _common import timed, timing_options  # noqa: E402

SHAPES = [   # (name, rows, in, out)
    ("minilm q/k/v/o", 32 * 46, 384, 384), ("minilm ffn up", 32 * 46, 384, 1536),
    ("minilm ffn down", 32 * 46, 1536, 384), ("smollm2 q/o", 8 * 100, 576, 576),
    ("smollm2 k/v", 8 * 100, 576, 192), ("smollm2 gate/up", 8 * 100, 576, 1536),
    ("smollm2 down", 8 * 100, 1536, 576), ("smollm2 lm head", 16, 576, 49152),
]


def row(shape, rounds: int, scale: float) -> dict:
    from peft_ray_kernels import onednn as cl

    name, m, k, n = shape
    x = torch.randn(m, k, requires_grad=True)
    w, b = torch.randn(n, k) * k ** -0.5, torch.randn(n)
    sides = {"torch": lambda: F.linear(x, w, b), "onednn": lambda: cl.linear(x, w, b)}
    g = torch.randn(m, n)
    reps = max(3, int(scale * 2e9 / (2 * m * k * n)))
    best = {}
    for r in range(rounds):
        for side in (sides if r % 2 else list(sides)[::-1]):
            for grad in (True, False):
                best[(side, grad)] = min(best.get((side, grad), 1e9), timed(sides[side], reps, grad, g))
    return {"name": name, "rows": m, "in": k, "out": n,
            **{f"{side}_{'train' if grad else 'infer'}_ms": 1e3 * t for (side, grad), t in best.items()}}


def steps(method: str, points: int, data: str) -> dict:
    """Whole steps of the job with its frozen products on each side, alternated on the same batches."""
    from _common import length_grouped_batches, paired_steps
    from step_vs_hf import ours

    from peft_ray.methods.cpu_linear import CpuLinear
    from peft_ray_kernels import onednn

    tok, step, model = ours(method, data, with_model=True)

    def torch_side(batch):
        with onednn.off():
            step(batch)
    times = paired_steps({"torch": torch_side, "onednn": step}, length_grouped_batches(tok, data, points) * 3)
    return {"method": method, "layers": sum(type(m) is CpuLinear for m in model.modules()),
            "torch_ms": 1e3 * sum(times["torch"]) / len(times["torch"]),
            "onednn_ms": 1e3 * sum(times["onednn"]) / len(times["onednn"]),
            "x_sum": sum(times["torch"]) / sum(times["onednn"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    timing_options(ap, len(SHAPES))
    ap.add_argument("--steps", type=int, default=0, help="whole-step A/B at N points of the length order")
    ap.add_argument("--methods", default="prompt_tuning,lora")
    ap.add_argument("--data", default="../shared/data/sst2")
    ap.add_argument("--out", default="bench/results/cpu_linear.json")
    a = ap.parse_args()
    os.environ["PEFT_RAY_ONEDNN"] = "1"   # the oneDNN side on any CPU (by default on AMD CPUs only)
    torch.set_num_threads(a.threads)
    rows = [row(s, a.rounds, a.scale) for s in SHAPES[: a.shapes]]
    print(f"{'product':<16} {'rows':>5} {'in':>5} {'out':>6} | {'train ms torch':>14} {'oneDNN':>7} {'x':>5} | "
          f"{'infer ms torch':>14} {'oneDNN':>7} {'x':>5}")
    for r in rows:
        print(f"{r['name']:<16} {r['rows']:>5} {r['in']:>5} {r['out']:>6} | {r['torch_train_ms']:>14.2f} "
              f"{r['onednn_train_ms']:>7.2f} {r['torch_train_ms'] / r['onednn_train_ms']:>5.2f} | "
              f"{r['torch_infer_ms']:>14.2f} {r['onednn_infer_ms']:>7.2f} {r['torch_infer_ms'] / r['onednn_infer_ms']:>5.2f}")
    whole = [steps(m, a.steps, a.data) for m in a.methods.split(",")] if a.steps else []
    for s in whole:
        print(f"step {s['method']:<14} ({s['layers']} frozen layers): torch {s['torch_ms']:.1f} ms, oneDNN "
              f"{s['onednn_ms']:.1f} ms, x (sum) {s['x_sum']:.3f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"threads": a.threads, "rows": rows, "steps": whole}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
