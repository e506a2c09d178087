"""`torch.compile` of the MiniLM SST-2 models against eager: one training step (forward,
cross-entropy, backward, AdamW), side by side in one process, plus what compiling costs.

    python bench/compile.py --data ../shared/data/sst2 --out bench/results/compile.json

Both models come from the jobs' own builder (train/engine.build_model, train mode, fast CPU
dropout on as in a job). The compiled copy is `torch.compile(model, dynamic=True)` (inductor,
C++/OpenMP on the CPU) with torch's own dropout put back: the fast mask is drawn by numpy,
which dynamo cannot trace (64 graph breaks and 0.52x of eager in a smoke run), while inductor
fuses torch's dropout with Philox. Length grouping gives every batch its own length, so static shapes would
recompile per length. Batches are 32 real rows of similar length from spread-out parts of the
length order. `compile s` is the first compiled step minus an eager step (tracing + code
generation); `recompiles` counts the compiled frames past the first. The headline is the median
over step pairs of (eager time / compiled time), after `--warmup` batches (which also absorb
recompiles for new length ranges).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))   # for _common when loaded by path (tests)

import torch  # noqa: E402

from peft_ray.spec import load_spec  # noqa: E402
from peft_ray.train.engine import build_model  # noqa: E402
from _common import length_grouped_batches, paired_ratio, paired_steps, train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOBS = {"prompt_tuning": "jobs/sst2_prompt_tuning.yaml", "lora": "jobs/sst2_lora.yaml"}


def torch_dropout(model):
    """Undo peft_ray.fast_dropout and peft_ray.cpu_attention on a copy: nn.Dropout classes and the
    model's own attention config."""
    from peft_ray.cpu_attention import NAME
    from peft_ray.fast_dropout import FastDropout

    own = next(m.config for m in model.modules()
               if getattr(getattr(m, "config", None), "_attn_implementation", NAME) != NAME)
    for m in model.modules():
        if type(m) is FastDropout:
            m.__class__ = torch.nn.Dropout
        if getattr(getattr(m, "config", None), "_attn_implementation", None) == NAME:
            m.config = own
    return model


def run(method: str, data: str, steps: int, threads: int, warmup: int) -> dict:
    import torch._dynamo as dynamo

    torch.set_num_threads(threads)
    spec = load_spec(ROOT / JOBS[method], [f"data.root={data or 'builtin:sentiment'}"])
    eager, tok, _ = build_model(spec)
    eager.train()
    other = torch_dropout(copy.deepcopy(eager))
    dynamo.reset()
    compiled = torch.compile(other, dynamic=True)
    opt = lambda m: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)  # noqa: E731
    sides = {"eager": train_step(eager, opt(eager)), "compiled": train_step(compiled, opt(other))}
    batches = length_grouped_batches(tok, data, steps + warmup + 1)
    first = {**batches[0], "labels": torch.arange(len(batches[0]["input_ids"])) % 2}
    t0 = time.perf_counter(); sides["eager"](first); eager_s = time.perf_counter() - t0
    t0 = time.perf_counter(); sides["compiled"](first); first_s = time.perf_counter() - t0
    times = paired_steps(sides, batches[1:], warmup=warmup)
    frames = dynamo.utils.counters["stats"]["unique_graphs"]
    return {"method": method, "eager_ms": 1000 * statistics.median(times["eager"]),
            "compiled_ms": 1000 * statistics.median(times["compiled"]),
            "speedup": paired_ratio(times, "eager", "compiled"), "compile_s": first_s - eager_s,
            "graphs": int(frames), "graph_breaks": int(sum(dynamo.utils.counters["graph_break"].values())),
            "steps": steps, "threads": threads}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sst2"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="prompt_tuning,lora")
    ap.add_argument("--out", default="bench/results/compile.json")
    a = ap.parse_args()
    rows = [run(m, a.data, a.steps, a.threads, a.warmup) for m in a.methods.split(",")]
    print(f"{'method':<14} {'eager ms':>9} {'compiled ms':>12} {'x (paired)':>11} {'compile s':>10} "
          f"{'graphs':>7} {'breaks':>7}")
    for r in rows:
        print(f"{r['method']:<14} {r['eager_ms']:>9.1f} {r['compiled_ms']:>12.1f} {r['speedup']:>11.2f} "
              f"{r['compile_s']:>10.1f} {r['graphs']:>7} {r['graph_breaks']:>7}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
