"""How fast can a MiniLM training step be? Its matrix products and attention alone, timed against
HF PEFT's step and peft-ray's on the same batches, alternated in one process.

    python bench/loop_floor.py --data ../shared/data/sst2 --out bench/results/loop_floor.json

The floor is the work no exact implementation can skip, done by the same kernels torch uses
(MKL GEMMs and batched products) at the batch's shapes, and nothing else:
- forward: every layer's Q/K/V, attention output, FFN up and down projections; the last layer's
  query and projections after attention at row 0 only (a pooled head reads nothing else), and its
  keys and values through associativity, as peft-ray computes them since the twenty-second
  session ((W_k^T q0) . x_j and W_v (sum_j p_j x_j): per row a dot product with each head's
  vector, not a projection);
- backward: the input gradient of each of those products (frozen weights get no weight
  gradient), except where nothing trainable lies below: layer 0's Q/K/V input gradient at the
  soft-prompt rows only (prompt tuning), or not at all (LoRA);
- LoRA's rank-8 products on query and value, forward and backward;
- attention's two batched products forward and four backward (softmax left out, like every other
  elementwise step; until the twenty-second session this was SDPA's kernel); the pooler.
LayerNorm, GELU, softmax, residual adds, dropout, embeddings, the loss and the optimizer are left
out, so this is a lower bound: `max x` = HF's step time / the floor is more than any exact
implementation can reach against HF on these batches, on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))   # for _common when loaded by path (tests), step_vs_hf
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from _common import length_grouped_batches, paired_ratio, paired_steps  # noqa: E402
from step_vs_hf import ours, theirs  # noqa: E402

HIDDEN, FFN, LAYERS, HEADS, PROMPT, RANK = 384, 1536, 6, 12, 20, 8    # all-MiniLM-L6-v2; the jobs' 20 tokens, r 8


def floor_step(method: str, max_rows: int = 32 * (64 + PROMPT)):
    """A step's unavoidable products and attention at a batch's shapes (weights random: speed only).
    Inputs are drawn once, up to `max_rows` tokens, and sliced per batch: drawing them in the
    step (17 ms at SST-2's shapes) would raise the floor."""
    g = torch.Generator().manual_seed(0)
    w_hh, w_fh = torch.randn(HIDDEN, HIDDEN, generator=g), torch.randn(FFN, HIDDEN, generator=g)
    lora_a, lora_b = torch.randn(RANK, HIDDEN, generator=g), torch.randn(HIDDEN, RANK, generator=g)
    x_all, xf_all = torch.randn(max_rows, HIDDEN, generator=g), torch.randn(max_rows, FFN, generator=g)
    qkv_all = torch.randn(4, max_rows * HIDDEN, generator=g)

    def step(batch: dict) -> None:
        b, n = batch["input_ids"].shape
        n += PROMPT if method == "prompt_tuning" else 0
        x, xf = x_all[: b * n], xf_all[: b * n]
        d = HIDDEN // HEADS
        q, k, v = (t[: b * HEADS * n * d].view(b * HEADS, n, d) for t in qkv_all[:3])
        u = qkv_all[3][: b * HEADS * HIDDEN].view(b, HEADS, HIDDEN)            # per row and head: W_k^T q0, or p^T x
        for layer in range(LAYERS):
            last = layer == LAYERS - 1
            rows, rows_f = (x[:b], xf[:b]) if last else (x, xf)
            below = x if layer else (x[: b * PROMPT] if method == "prompt_tuning" else x[:0])
            if last:   # K and V through associativity: a (B, H, h) x (B, h, n) product each way, and back
                x3 = x.view(b, n, HIDDEN)
                rows @ w_hh.T                                             # Q at row 0
                s = torch.bmm(u, x3.transpose(1, 2))                      # scores: (W_k^T q0) . x_j
                torch.bmm(s, x3)                                          # context: sum_j p_j x_j
                torch.bmm(s.transpose(1, 2), u), torch.bmm(x3, u.transpose(1, 2))   # their input gradients
                rows @ w_hh, rows @ w_hh, rows @ w_hh                     # W_k^T q0, W_v (.) and Q's input gradients
            else:
                x @ w_hh.T, x @ w_hh.T, x @ w_hh.T                        # Q, K, V
                torch.bmm(q, k.transpose(1, 2)), torch.bmm(q.new_empty(b * HEADS, n, n), v)   # scores, context
                p = q.new_empty(b * HEADS, n, n)
                torch.bmm(p, k), torch.bmm(p.transpose(1, 2), q)          # dq, dk
                torch.bmm(q, v.transpose(1, 2)), torch.bmm(p.transpose(1, 2), q)   # dp, dv
                below @ w_hh, below @ w_hh, below @ w_hh                  # Q, K, V input gradients
            rows @ w_hh.T, rows @ w_fh.T, rows_f @ w_fh                   # output, FFN up, FFN down
            rows @ w_fh.T, rows_f @ w_fh, rows @ w_hh                     # their input gradients
            if method == "lora":
                for _ in range(2):                                        # query, value
                    xa = x @ lora_a.T
                    dy = xa @ lora_b.T                                    # forward (its shape stands in for dY)
                    dy.T @ xa, dy @ lora_b                                # dB, d(xA)
                    xa.T @ x                                              # dA
                    if layer:
                        xa @ lora_a                                       # input gradient
        x[:b] @ w_hh.T, x[:b] @ w_hh                                      # pooler and its input gradient
    return step


def run(method: str, data: str, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    tok, ours_step = ours(method, data)
    sides = {"hf_peft": theirs(method), "peft_ray": ours_step, "floor": floor_step(method)}
    times = paired_steps(sides, length_grouped_batches(tok, data, steps + 2))
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    return {"method": method, "hf_ms": ms["hf_peft"], "peft_ray_ms": ms["peft_ray"], "floor_ms": ms["floor"],
            "x_peft_ray": paired_ratio(times, "hf_peft", "peft_ray"), "x_max": paired_ratio(times, "hf_peft", "floor"),
            "steps": steps, "threads": threads, "load_after": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"))
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="prompt_tuning,lora")
    ap.add_argument("--out", default="bench/results/loop_floor.json")
    a = ap.parse_args()
    rows = [run(m, a.data, a.steps, a.threads) for m in a.methods.split(",")]
    print(f"{'method':<15} {'HF ms':>7} {'peft-ray ms':>12} {'floor ms':>9} {'x peft-ray':>11} {'max x':>6} {'load':>5}")
    for r in rows:
        print(f"{r['method']:<15} {r['hf_ms']:>7.1f} {r['peft_ray_ms']:>12.1f} {r['floor_ms']:>9.1f} "
              f"{r['x_peft_ray']:>11.2f} {r['x_max']:>6.2f} {r['load_after']:>5.1f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
