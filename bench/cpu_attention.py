"""peft_ray/cpu_attention.py's math against transformers' SDPA function on the CPU, per shape.

    python bench/cpu_attention.py --out bench/results/cpu_attention.json

Each row is one attention call at a job's shape (batch, query heads / key-value heads, query and
key lengths, head size): MiniLM's 12 x 32 heads at SST-2 batch 32 with the prompt-tuning job's 20
soft tokens (30-84 positions) and at the pooled readout's one query row, SmolLM2's 9 / 3 x 64
heads, causal, at 16-shot batch 8. `train ms` is forward + backward, `infer ms` the forward under
inference_mode; the two sides alternate, best of `--rounds`. `x` is SDPA time / math time, and
`runs` says which one cpu_attention picks at that shape (math up to `math_up_to(head size)` keys).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))   # for _common when loaded by path (tests)
from _common import timed, timing_options  # noqa: E402

SHAPES = [   # (batch, heads, kv heads, query length, key length, head size, causal)
    (32, 12, 12, 30, 30, 32, False), (32, 12, 12, 46, 46, 32, False), (32, 12, 12, 64, 64, 32, False),
    (32, 12, 12, 84, 84, 32, False), (32, 12, 12, 1, 46, 32, False),
    (8, 9, 3, 40, 40, 64, True), (8, 9, 3, 64, 64, 64, True), (8, 9, 3, 96, 96, 64, True),
    (8, 9, 3, 128, 128, 64, True), (8, 9, 3, 192, 192, 64, True),
]


def row(shape, rounds: int, scale: float) -> dict:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    import peft_ray.cpu_attention as ca

    B, H, kvh, q_len, n, d, causal = shape
    q = torch.randn(B, H, q_len, d, requires_grad=True)
    k, v = (torch.randn(B, kvh, n, d, requires_grad=True) for _ in range(2))
    mask = None
    if not causal:                                   # a padded batch: the last 3 keys masked
        mask = torch.ones(B, 1, q_len, n, dtype=torch.bool)
        mask[..., -3:] = False
    module = types.SimpleNamespace(is_causal=causal, num_key_value_groups=H // kvh, training=True)
    sides = {"sdpa": lambda: sdpa_attention_forward(module, q, k, v, mask, scaling=d ** -0.5)[0],
             "math": lambda: ca.attention(module, q, k, v, mask, scaling=d ** -0.5)[0]}
    real = ca._use_math
    ca._use_math = lambda *a: True                   # time the math at every shape, not only where it runs
    try:
        g = torch.randn_like(sides["sdpa"]())
        reps = max(5, int(scale * 2e7 / (B * H * q_len * n)))
        best = {}
        for r in range(rounds):
            for name in (sides if r % 2 else list(sides)[::-1]):
                for grad in (True, False):
                    key = (name, grad)
                    best[key] = min(best.get(key, 1e9), timed(sides[name], reps, grad, g))
    finally:
        ca._use_math = real
    picks = real(q, k, mask, 0.0, causal, {})
    return {"shape": dict(batch=B, heads=H, kv_heads=kvh, q_len=q_len, kv_len=n, head_dim=d, causal=causal),
            "sdpa_train_ms": 1e3 * best[("sdpa", True)], "math_train_ms": 1e3 * best[("math", True)],
            "sdpa_infer_ms": 1e3 * best[("sdpa", False)], "math_infer_ms": 1e3 * best[("math", False)],
            "runs": "math" if picks else "sdpa"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    timing_options(ap, len(SHAPES))
    ap.add_argument("--out", default="bench/results/cpu_attention.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = [row(s, a.rounds, a.scale) for s in SHAPES[: a.shapes]]
    print(f"{'B':>3} {'H/kv':>6} {'q':>4} {'kv':>4} {'d':>3} {'causal':>6} | {'train ms sdpa':>13} {'math':>7} {'x':>5} | "
          f"{'infer ms sdpa':>13} {'math':>7} {'x':>5} | runs")
    for r in rows:
        s = r["shape"]
        print(f"{s['batch']:>3} {s['heads']:>3}/{s['kv_heads']:<2} {s['q_len']:>4} {s['kv_len']:>4} {s['head_dim']:>3} "
              f"{str(s['causal']):>6} | {r['sdpa_train_ms']:>13.2f} {r['math_train_ms']:>7.2f} "
              f"{r['sdpa_train_ms'] / r['math_train_ms']:>5.2f} | {r['sdpa_infer_ms']:>13.2f} {r['math_infer_ms']:>7.2f} "
              f"{r['sdpa_infer_ms'] / r['math_infer_ms']:>5.2f} | {r['runs']}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"threads": a.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
