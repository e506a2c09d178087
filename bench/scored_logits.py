"""Causal verbalizer scoring with only the scored rows through the LM head (`logits_to_keep`)
against the full (B, n, V) logits: one training step (label scores, cross-entropy, backward) on
the real SmolLM2-135M-Instruct at the shapes of the 16-shot SST-2 jobs, side by side in one process.

    python bench/scored_logits.py --out bench/results/scored_logits.json

Both paths run tasks/classification/verbalizer.label_scores, the code training uses, on the same
model and batch: `keep_logits=False` is the computation before (every position projected onto
the 49,152-word vocabulary, then one row per sequence read). Steps alternate between the two so
load on the shared machine hits both alike; the headline is the median over step pairs of
(full time / scored-rows time). The label scores and the trainable gradients of both are compared.

Rows: prompt tuning with the causal prompt cache (jobs/sst2_smollm2_prompt_tuning.yaml: 16
virtual tokens, text init), prompt tuning with the prepend (prompt_cache: off), and LoRA r 8 on
every projection (jobs/sst2_smollm2_lora.yaml). B = 8 right-padded rows of 20-48 tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from peft_ray.inference import InferenceEngine  # noqa: E402
from peft_ray.methods import get_method  # noqa: E402
from peft_ray.methods.common import BuildContext  # noqa: E402
from peft_ray.models import head_modules, resolve_model_path  # noqa: E402
from peft_ray.tasks.classification.verbalizer import label_scores  # noqa: E402

METHODS = {
    "prompt tuning, cache": ("prompt_tuning", {"num_virtual_tokens": 16, "init": "random"}),
    "prompt tuning, prepend": ("prompt_tuning", {"num_virtual_tokens": 16, "init": "random", "prompt_cache": "off"}),
    "LoRA r 8, all projections": ("lora", {"r": 8, "lora_alpha": 16, "target_modules": [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}),
}


def build(path: str, method: str, kwargs: dict) -> InferenceEngine:
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    spec = get_method(method)
    ctx = BuildContext(tokenizer=None, seed=0, head_modules=head_modules(base), kernels="torch")
    engine = InferenceEngine(spec.build(base, spec.config_cls(name=method, **kwargs), ctx), torch.device("cpu"))
    return engine.train()   # training steps (SmolLM2 has no dropout, so the cache stays on)


def make_batch(B: int, vocab: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, 49, (B,), generator=g)
    n = int(lengths.max())
    ids = torch.randint(2, vocab, (B, n), generator=g)
    mask = (torch.arange(n)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "score_pos": lengths - 1,
            "labels": torch.randint(0, 2, (B,), generator=g)}


def step(engine, batch: dict, cands, keep: bool):
    engine.module.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    scores = label_scores(engine, batch, cands, "causal", keep_logits=keep)
    F.cross_entropy(scores, batch["labels"]).backward()
    return time.perf_counter() - t0, scores.detach()


def grads(engine) -> dict:
    return {n: p.grad.clone() for n, p in engine.module.named_parameters() if p.grad is not None}


def measure(engine, batch: dict, cands, steps: int, warmup: int) -> dict:
    times = {True: [], False: []}
    for i in range(warmup + steps):
        for keep in (False, True):
            t, scores = step(engine, batch, cands, keep)
            if i >= warmup:
                times[keep].append(t)
            out = (scores, grads(engine))
            if keep:
                fast = out
            else:
                slow = out
    rel = max(((fast[1][k] - slow[1][k]).abs().max() / slow[1][k].abs().max().clamp_min(1e-30)).item()
              for k in slow[1])
    return {"full_median_s": statistics.median(times[False]), "scored_median_s": statistics.median(times[True]),
            "speedup_paired": statistics.median(a / b for a, b in zip(times[False], times[True])),
            "score_max_abs_diff": (fast[0] - slow[0]).abs().max().item(), "grad_max_rel_diff": rel}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/scored_logits.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import AutoTokenizer

    path = resolve_model_path("smollm2")
    tok = AutoTokenizer.from_pretrained(path)
    cands = tuple(((tok(" " + w, add_special_tokens=False)["input_ids"][0],),) for w in ("negative", "positive"))
    print(f"SmolLM2-135M-Instruct, B={a.batch_size}, {a.steps} paired steps, {a.threads} threads; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = {}
    for name, (method, kwargs) in METHODS.items():
        engine = build(path, method, kwargs)
        rows[name] = measure(engine, make_batch(a.batch_size, engine.module.base.config.vocab_size), cands,
                             a.steps, a.warmup)
        del engine
    print(f"\n{'method':<28}{'full ms':>9}{'scored ms':>11}{'x (paired)':>12}{'score diff':>12}{'grad rel':>10}")
    for name, r in rows.items():
        print(f"{name:<28}{r['full_median_s'] * 1e3:>9.0f}{r['scored_median_s'] * 1e3:>11.0f}"
              f"{r['speedup_paired']:>12.2f}{r['score_max_abs_diff']:>12.1e}{r['grad_max_rel_diff']:>10.1e}")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"batch_size": a.batch_size, "steps": a.steps, "threads": a.threads,
                                       "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
