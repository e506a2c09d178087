"""The row-0 readout of pooled classifiers (tasks/classification/readout.py) against the full
last layer: one training step (forward, cross-entropy, backward, AdamW) of the MiniLM SST-2
jobs, side by side in one process.

    python bench/first_row.py --data ../shared/data/sst2 --out bench/results/first_row.json

Both models come from the jobs' own builder (train/engine.build_model: jobs/sst2_lora.yaml and
jobs/sst2_prompt_tuning.yaml, MiniLM's 0.1 dropout on, train mode); the "full" copy has the
readout taken off. Batches are 32 real rows of the data (length-sorted chunks, as the trainer's
length grouping gives; the builtin sentiment set when --data is absent). Steps alternate between
the two so machine load hits both alike; the headline is the median over step pairs of
(full time / row-0 time). The logits of both (eval mode) are compared.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import types
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))   # for _common when loaded by path (tests)

import torch  # noqa: E402

from peft_ray.spec import load_spec  # noqa: E402
from peft_ray.tasks.classification.readout import last_attention_output  # noqa: E402
from peft_ray.train.engine import build_model  # noqa: E402
from _common import length_grouped_batches, paired_ratio, paired_steps, train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOBS = {"lora": "jobs/sst2_lora.yaml", "prompt_tuning": "jobs/sst2_prompt_tuning.yaml"}


def full_copy(model):
    """The same model with the readout taken off (the full last layer)."""
    full = copy.deepcopy(model)
    block = last_attention_output(full.base)
    block.forward = types.MethodType(type(block).forward, block)
    return full


def run(method: str, data: str, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    spec = load_spec(ROOT / JOBS[method], [f"data.root={data or 'builtin:sentiment'}"])
    fast, tok, _ = build_model(spec)
    full = full_copy(fast)
    bs = length_grouped_batches(tok, data, steps + 2)
    with torch.no_grad():
        fast.eval(), full.eval()
        diff = (fast(**bs[0]).logits - full(**bs[0]).logits).abs().max().item()
    fast.train(), full.train()
    times = paired_steps({name: train_step(m, torch.optim.AdamW([p for p in m.parameters() if p.requires_grad],
                                                                 lr=1e-4))
                          for name, m in (("row0", fast), ("full", full))}, bs)
    return {"method": method, "full_ms": 1000 * statistics.median(times["full"]),
            "row0_ms": 1000 * statistics.median(times["row0"]), "speedup": paired_ratio(times, "full", "row0"),
            "logit_max_diff": diff, "steps": steps, "threads": threads}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sst2"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="lora,prompt_tuning")
    ap.add_argument("--out", default="bench/results/first_row.json")
    a = ap.parse_args()
    rows = [run(m, a.data, a.steps, a.threads) for m in a.methods.split(",")]
    print(f"{'method':<15} {'full ms':>9} {'row-0 ms':>9} {'x (paired)':>11} {'logit diff':>11}")
    for r in rows:
        print(f"{r['method']:<15} {r['full_ms']:>9.1f} {r['row0_ms']:>9.1f} {r['speedup']:>11.2f} {r['logit_max_diff']:>11.1e}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
