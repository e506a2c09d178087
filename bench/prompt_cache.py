"""The causal-decoder prompt cache against HF PEFT's input-level prepend: one training step
(forward + backward of the LM loss) on a tiny Llama from config, side by side in one process.

    python bench/prompt_cache.py --out bench/results/prompt_cache.json
    python bench/prompt_cache.py --model smollm2 --num-virtual-tokens 16 --seq-len 48 \
        --out bench/results/prompt_cache_smollm2.json

`--model smollm2`: the real SmolLM2-135M-Instruct (30 layers, hidden 576, 9 heads / 3 KV
heads, vocab 49,152) at the shapes of jobs/sst2_smollm2_prompt_tuning.yaml (16 virtual
tokens, batch 8, SST-2 prompts of ~48 tokens).

Tiny Llama (from config, no download): 4 layers, hidden 256, 8 heads / 4 KV heads (GQA),
MLP 688, vocab 4096. Prompt tuning with n_p = 64 virtual tokens on B = 8 sequences of
n = 128 tokens (LM labels, so PEFT's (B, n_p + n, V) logits and -100 labels are exercised).
`prompt_cache: off` is the prepend path (PEFT's semantics, every row of every sequence),
`auto` the cache. Steps alternate between the two models (same weights, same batch) so
load on the shared machine hits both alike; the headline is the median over step pairs of
(prepend time / cache time), next to the ratios of median and of best step times. The
gradient of the prompt from both paths is compared (max relative difference).

`--loss scored` is the loss the SmolLM2 classification jobs train: one label-word score per row
at its last real token, with only that row through the LM head (`logits_to_keep`, as
tasks/classification/verbalizer.label_scores calls it), cross-entropy over two word ids.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch

from peft_ray.methods import get_method
from peft_ray.methods.common import BuildContext


def tiny_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=4, intermediate_size=688, max_position_embeddings=512,
                      pad_token_id=0, bos_token_id=1, eos_token_id=1)
    return LlamaForCausalLM(cfg).train()


def build(base, n_p: int, mode: str):
    spec = get_method("prompt_tuning")
    cfg = spec.config_cls(name="prompt_tuning", num_virtual_tokens=n_p, init="random", prompt_cache=mode)
    return spec.build(base, cfg, BuildContext(tokenizer=None, seed=0, kernels="torch")).train()


def step(model, batch: dict, loss: str = "lm") -> float:
    """Seconds for one forward + backward of the LM loss, or of the scored-row label loss."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    if loss == "lm":
        model(**batch).loss.backward()
    else:
        pos = batch["attention_mask"].sum(1) - 1                                  # last real token
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    logits_to_keep=pos.unsqueeze(1))
        scores = torch.log_softmax(out.logits[:, 0].float(), -1)[:, [2, 3]]       # two "label words"
        torch.nn.functional.cross_entropy(scores, pos % 2).backward()
    return time.perf_counter() - t0


def make_batch(B: int, n: int, vocab: int) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, vocab, (B, n), generator=g)
    mask = torch.ones_like(ids)
    mask[1, n - n // 4:] = 0                                                 # one right-padded row
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--num-virtual-tokens", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loss", choices=["lm", "scored"], default="lm",
                    help="lm: every position's logits; scored: one label score per row (the SmolLM2 jobs)")
    ap.add_argument("--out", default="bench/results/prompt_cache.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch.set_num_threads({a.threads}); n_p={a.num_virtual_tokens} n={a.seq_len} B={a.batch_size} loss={a.loss}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    if a.model == "smollm2":
        from transformers import AutoModelForCausalLM

        from peft_ray.models import resolve_model_path

        base = AutoModelForCausalLM.from_pretrained(resolve_model_path("smollm2"), dtype=torch.float32).train()
        a.vocab = base.config.vocab_size
    else:
        base = tiny_llama(a.vocab)
    models = {"prepend (off)": build(copy.deepcopy(base), a.num_virtual_tokens, "off"),
              "cache (auto)": build(base, a.num_virtual_tokens, "auto")}
    batch = make_batch(a.batch_size, a.seq_len, a.vocab)
    times = {k: [] for k in models}
    for i in range(a.warmup + a.steps):
        for name, model in models.items():
            t = step(model, batch, a.loss)
            if i >= a.warmup:
                times[name].append(t)
    report(models, times, a)


def report(models: dict, times: dict, a) -> None:
    (off_name, off), (on_name, on) = models.items()
    g_off, g_on = off.prompt.grad, on.prompt.grad
    rel = ((g_on - g_off).abs().max() / g_off.abs().max()).item()
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = a.batch_size * a.seq_len
    best = {k: min(v) for k, v in times.items()}
    paired = statistics.median(a / b for a, b in zip(times[off_name], times[on_name]))
    print(f"\n{'path':<16}{'median ms':>10}{'min ms':>9}{'tokens/s':>10}{'x (median)':>11}{'x (min)':>9}")
    for name, t in med.items():
        print(f"{name:<16}{t * 1e3:>10.1f}{best[name] * 1e3:>9.1f}{tokens / t:>10.0f}"
              f"{med[off_name] / t:>11.2f}{best[off_name] / best[name]:>9.2f}")
    print(f"speedup, median of paired steps: {paired:.2f}x (goal >= 1.3x); prompt grad max rel diff: {rel:.2e} "
          f"(goal: identical, < 1e-5); load average after {os.getloadavg()[0]:.2f}")
    rows = {"model": a.model, "loss": a.loss, "threads": a.threads, "num_virtual_tokens": a.num_virtual_tokens, "seq_len": a.seq_len,
            "batch_size": a.batch_size, "vocab": a.vocab, "steps": a.steps,
            "median_s": med, "min_s": best, "speedup": med[off_name] / med[on_name],
            "speedup_min": best[off_name] / best[on_name], "speedup_paired": paired,
            "prompt_grad_max_rel_diff": rel}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
