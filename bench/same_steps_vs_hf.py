"""Same start, same batches: does a peft-ray step equal HF PEFT's? (SmolLM2, causal verbalizer jobs)

    python bench/same_steps_vs_hf.py --job jobs/sst2_smollm2_lora.yaml --data ../shared/data/sst2 --seed 1

Few-shot accuracy over seeds mixes two things: whether the training step is right, and which
random start and batch order a seed happens to draw (on 32 rows, 16-shot SmolLM2 LoRA spans
0.78-0.87 over seeds on either side). This separates them. It runs `peft-ray train --local` in
this process, recording the adapter it starts from and every micro-batch it trains on, in order.
Then HF PEFT (`get_peft_model`, the job's method) starts from those adapter weights and takes
the same steps on the same batches with what HF Trainer runs: torch AdamW, HF's linear schedule
with warmup, `clip_grad_norm_`, the label-word cross-entropy of bench/_hf_smollm2_run.py.

It prints both loss curves (peft-ray's metrics.jsonl windows, HF's means over the same windows),
the largest difference, both adapters' accuracy on the validation rows, and the largest
difference between the two final adapters' weights. Equal curves and accuracies mean the step
is HF's, and any gap between the two over seeds is the seeds' draw.

Both sides' micro-steps are also timed on those identical batches (forward, backward and, at a
step's last micro-batch, the optimizer; the first WARM left out): the step's own speed ratio,
free of the batch orders and evaluations that whole-run comparisons also measure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def record_peft_ray(job: str, overrides: list, out: Path) -> dict:
    """Train in this process; return the starting adapter, the micro-batches, and the logged curve."""
    import torch

    import peft_ray.train.recipe as recipe
    from peft_ray.cli import main as cli

    seen = {"start": None, "batches": [], "seconds": []}
    inner = recipe.train_micro_step

    def recording(ctx, state, batch, weight=1.0, logged=1.0):
        if seen["start"] is None:
            seen["start"] = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if p.requires_grad}
        seen["batches"].append({k: batch[k].clone() for k in ("input_ids", "attention_mask", "labels", "score_pos")}
                               | {"step": state.global_step})
        t0 = time.perf_counter()
        out = inner(ctx, state, batch, weight, logged)
        seen["seconds"].append(time.perf_counter() - t0)
        return out

    recipe.train_micro_step = recording
    try:
        cli.main(["train", job, "--local", "--overwrite", "-q", f"output.dir={out}", *overrides],
                 standalone_mode=False)
    finally:
        recipe.train_micro_step = inner
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    seen["curve"] = [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train"]
    seen["metrics"] = json.load(open(out / "metrics.json"))
    seen["last"] = {n: p for n, p in _adapter(out / "adapter_last").items()}
    seen["grad_accum"] = None
    return seen


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _key(name: str) -> str:
    """A parameter's place, whatever wraps it: 'layers.3.self_attn.q_proj.lora_A'."""
    parts = [p for p in name.split(".") if p not in ("default", "weight", "base_model", "model", "module", "base")]
    return ".".join(parts)


def hf_steps(spec, path: str, rec: dict, threads: int) -> dict:
    import torch
    import torch.nn.functional as F
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup

    from _hf_smollm2_run import peft_config
    from peft_ray.tasks.classification.verbalizer import spec_candidates

    torch.set_num_threads(threads)
    cands, _ = spec_candidates(spec)
    words = [w[0][0] for w in cands]
    base = AutoModelForCausalLM.from_pretrained(path)
    model = get_peft_model(base, peft_config(spec, base.config.hidden_size))
    theirs = {_key(n): p for n, p in model.named_parameters() if p.requires_grad}
    mine = {_key(n): v for n, v in rec["start"].items()}
    assert theirs.keys() == mine.keys(), sorted(set(theirs) ^ set(mine))[:6]
    with torch.no_grad():
        for k, p in theirs.items():
            p.copy_(mine[k].reshape(p.shape))
    model.train()
    t = spec.train
    steps = max(b["step"] for b in rec["batches"]) + 1
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, math.ceil(steps * t.warmup_ratio), steps)
    by_step: dict = {}
    for b in rec["batches"]:
        by_step.setdefault(b["step"], []).append(b)
    losses, seconds = [], []
    for step in range(steps):
        micro = by_step[step]
        total = 0.0
        for i, b in enumerate(micro):
            t0 = time.perf_counter()
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            logits = out.logits[torch.arange(len(b["labels"])), b["score_pos"]]
            loss = F.cross_entropy(torch.log_softmax(logits.float(), -1)[:, words], b["labels"]) / len(micro)
            loss.backward()
            total += float(loss.detach())
            if i == len(micro) - 1:
                if t.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                                   t.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad()
            seconds.append(time.perf_counter() - t0)
        losses.append(total)
    return {"model": model, "losses": losses, "words": words, "seconds": seconds}


WARM = 2   # micro-steps left out of the timing: the first calls allocate and pick kernels


def step_ms(ours: list, theirs: list) -> dict:
    """Mean micro-step time of each side on the same batches, after WARM, and HF's over peft-ray's."""
    ours, theirs = ours[WARM:] or ours, theirs[WARM:] or theirs
    mine, hf = 1e3 * sum(ours) / len(ours), 1e3 * sum(theirs) / len(theirs)
    return {"micro_steps": len(ours), "peft_ray": mine, "hf_peft": hf, "ratio": hf / mine}


def accuracy(model, val: list, words: list, pad_id: int, batch: int) -> float:
    import torch

    model.eval()
    val = sorted(val, key=lambda r: len(r["input_ids"]))
    correct = 0
    with torch.no_grad():
        for i in range(0, len(val), batch):
            rows = val[i:i + batch]
            n = max(len(r["input_ids"]) for r in rows)
            ids = torch.full((len(rows), n), pad_id)
            mask = torch.zeros((len(rows), n), dtype=torch.long)
            for j, r in enumerate(rows):
                ids[j, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
                mask[j, :len(r["input_ids"])] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits
            pos = torch.tensor([r["score_pos"] for r in rows])
            pred = logits[torch.arange(len(rows)), pos][:, words].argmax(-1)
            correct += int((pred == torch.tensor([r["label"] for r in rows])).sum())
    return correct / len(val)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default="jobs/sst2_smollm2_lora.yaml")
    ap.add_argument("--data", default="../shared/data/sst2")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], help="more job overrides")
    ap.add_argument("--out", default="bench/results/same_steps_vs_hf.json")
    a = ap.parse_args()

    from _hf_smollm2_run import rows
    from peft_ray.models import resolve_model_path
    from peft_ray.spec import load_spec

    overrides = [f"data.root={a.data}", f"train.seed={a.seed}", f"scaling.torch_threads={a.threads}",
                 "train.eval_every=1000000", *a.set]
    spec = load_spec(a.job, overrides)
    assert spec.method.name == "lora", "the HF side here maps LoRA weights (prompt methods: a later extension)"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        rec = record_peft_ray(a.job, overrides, Path(tmp) / "run")
        ray_s = time.time() - t0
    path = resolve_model_path(spec.model.name_or_path)
    spec.model.name_or_path = path
    t0 = time.time()
    hf = hf_steps(spec, path, rec, a.threads)
    hf_s = time.time() - t0
    from transformers import AutoTokenizer
    val = rows(spec, path, "validation")
    hf_acc = accuracy(hf["model"], val, hf["words"], AutoTokenizer.from_pretrained(path).pad_token_id,
                      spec.train.eval_batch_size)
    # peft-ray logs the mean over a window of steps ending at `step` (1-based)
    curve, prev = [], 0
    for step, loss in rec["curve"]:
        theirs = sum(hf["losses"][prev:step]) / (step - prev)
        curve.append({"step": step, "peft_ray": loss, "hf_peft": theirs})
        prev = step
    theirs_last = {_key(n): p.detach() for n, p in hf["model"].named_parameters() if p.requires_grad}
    mine_last = {_key(n): v for n, v in rec["last"].items()}
    common = theirs_last.keys() & mine_last.keys()
    w_diff = max(float((theirs_last[k] - mine_last[k].reshape(theirs_last[k].shape)).abs().max()) for k in common)
    w_scale = max(float(theirs_last[k].abs().max()) for k in common)
    result = {"job": a.job, "seed": a.seed, "set": a.set, "steps": len(hf["losses"]),
              "accuracy": {"peft_ray": rec["metrics"]["accuracy"], "hf_peft_same_steps": hf_acc},
              "max_loss_diff": max(abs(c["peft_ray"] - c["hf_peft"]) for c in curve),
              "max_weight_diff": w_diff, "max_weight": w_scale, "weights_compared": len(common),
              "seconds": {"peft_ray": ray_s, "hf_peft": hf_s}, "step_ms": step_ms(rec["seconds"], hf["seconds"]),
              "curve": curve}
    print(f"\n{'step':>5} {'peft-ray loss':>14} {'HF PEFT loss':>13}")
    for c in curve[:: max(1, len(curve) // 20)]:
        print(f"{c['step']:>5} {c['peft_ray']:>14.6f} {c['hf_peft']:>13.6f}")
    print(f"\nlargest loss difference over {len(curve)} logged windows: {result['max_loss_diff']:.2e}")
    print(f"final adapters: largest weight difference {w_diff:.2e} (largest weight {w_scale:.3f}, "
          f"{len(common)} tensors)")
    print(f"validation accuracy ({len(val)} rows): peft-ray {result['accuracy']['peft_ray']:.4f}, "
          f"HF PEFT on the same steps {hf_acc:.4f}")
    ms = result["step_ms"]
    print(f"micro-step on the same {ms['micro_steps']} batches: peft-ray {ms['peft_ray']:.1f} ms, "
          f"HF PEFT {ms['hf_peft']:.1f} ms ({ms['ratio']:.2f}x)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    json.dump(result, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
