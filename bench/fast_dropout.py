"""Fast CPU dropout (peft_ray/fast_dropout.py) against torch's: one training step (forward,
cross-entropy, backward, AdamW) of the MiniLM SST-2 jobs that keep MiniLM's 0.1 dropout,
side by side in one process.

    python bench/fast_dropout.py --data ../shared/data/sst2 --out bench/results/fast_dropout.json

Both models come from the jobs' own builder (train/engine.build_model, train mode); the "torch"
copy has its dropout layers turned back into nn.Dropout. Batches are 32 real rows of similar
length (as length grouping gives). Steps alternate between the two so machine load hits both
alike; the headline is the median over step pairs of (torch time / fast time). The attention
probabilities' dropout runs inside SDPA in both (it reads only `p`), so it is not sped up.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))   # for _common when loaded by path (tests)

import torch  # noqa: E402

from peft_ray.fast_dropout import FastDropout  # noqa: E402
from peft_ray.spec import load_spec  # noqa: E402
from peft_ray.train.engine import build_model  # noqa: E402
from _common import length_grouped_batches, paired_ratio, paired_steps, train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOBS = {"lora": "jobs/sst2_lora.yaml", "ia3": "jobs/sst2_ia3.yaml"}


def torch_copy(model):
    slow = copy.deepcopy(model)
    for m in slow.modules():
        if type(m) is FastDropout:
            m.__class__ = torch.nn.Dropout
    return slow


def run(method: str, data: str, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    spec = load_spec(ROOT / JOBS[method], [f"data.root={data or 'builtin:sentiment'}"])
    fast, tok, _ = build_model(spec)
    slow = torch_copy(fast)
    layers = sum(1 for m in fast.modules() if type(m) is FastDropout)
    fast.train(), slow.train()
    times = paired_steps({name: train_step(m, torch.optim.AdamW([p for p in m.parameters() if p.requires_grad],
                                                                 lr=1e-4))
                          for name, m in (("fast", fast), ("torch", slow))},
                         length_grouped_batches(tok, data, steps + 2))
    return {"method": method, "torch_ms": 1000 * statistics.median(times["torch"]),
            "fast_ms": 1000 * statistics.median(times["fast"]), "speedup": paired_ratio(times, "torch", "fast"),
            "dropout_layers": layers, "steps": steps, "threads": threads}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sst2"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="lora,ia3")
    ap.add_argument("--out", default="bench/results/fast_dropout.json")
    a = ap.parse_args()
    rows = [run(m, a.data, a.steps, a.threads) for m in a.methods.split(",")]
    print(f"{'method':<8} {'torch ms':>9} {'fast ms':>9} {'x (paired)':>11} {'dropout layers':>15}")
    for r in rows:
        print(f"{r['method']:<8} {r['torch_ms']:>9.1f} {r['fast_ms']:>9.1f} {r['speedup']:>11.2f} {r['dropout_layers']:>15}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
