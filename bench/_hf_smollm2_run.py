"""One HF PEFT + HF Trainer few-shot run on SmolLM2 (the anchor), for bench/smollm2.py.

    python bench/_hf_smollm2_run.py --job jobs/sst2_smollm2_prompt_tuning.yaml --data ../shared/data/sst2 \
        --seed 0 --out r.json

Identical work to the peft-ray run of the same job: the same rows (peft-ray's own few-shot
pick and preprocessing give the token ids, so template, truncation and score position are
the same), the same label-word cross-entropy, batch, steps, lr, warmup and linear schedule.
HF's side is plain PEFT (`get_peft_model`, CAUSAL_LM: prompt tuning, P-tuning, prefix
tuning or LoRA) under HF Trainer with dynamic padding
and length grouping; evaluation scores the label words at the same position.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peft_config(spec, hidden: int):
    from peft import (LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, PromptTuningInit,
                      TaskType)

    m = spec.method
    if m.name == "p_tuning":     # PEFT's prompt encoder with peft-ray's defaults (3-layer MLP, width = hidden)
        return PromptEncoderConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=m.num_virtual_tokens,
                                   encoder_reparameterization_type=m.encoder_reparameterization_type,
                                   encoder_hidden_size=m.encoder_hidden_size or hidden,
                                   encoder_num_layers=m.encoder_num_layers, encoder_dropout=m.encoder_dropout)
    if m.name == "prefix_tuning":  # PEFT has no text init: its prefix starts random (peft-ray's `init: text` is ours)
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=m.num_virtual_tokens)
    if m.name == "prompt_tuning":
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=m.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=m.init_text,
                                  tokenizer_name_or_path=spec.model.name_or_path)
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=m.r, lora_alpha=m.lora_alpha, lora_dropout=0.0,
                      target_modules=list(m.target_modules))


def rows(spec, path, split):
    import pyarrow as pa

    from peft_ray.data.preprocess import preprocess
    from peft_ray.tasks.pipeline import make_preprocess_config
    from peft_ray.data.sources import iter_arrow, resolve_files
    from peft_ray.tasks.pipeline import needed_columns

    name = spec.data.train if split == "train" else spec.data.validation
    files = resolve_files(spec.data.root, name, f"data.{split}")
    cfg = make_preprocess_config(spec, path, split)
    out = []
    for b in iter_arrow(files, needed_columns(spec)):
        out += preprocess(pa.Table.from_batches([b]), cfg).to_pylist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", nargs="*", default=[], help="job overrides, as on the peft-ray command line")
    a = ap.parse_args()
    t0 = time.time()

    import torch
    import torch.nn.functional as F
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from peft_ray.models import resolve_model_path
    from peft_ray.spec import load_spec
    from peft_ray.tasks.classification.verbalizer import spec_candidates

    torch.set_num_threads(a.threads)
    spec = load_spec(a.job, [f"data.root={a.data}", f"train.seed={a.seed}", *a.set])
    path = resolve_model_path(spec.model.name_or_path)
    spec.model.name_or_path = path
    tok = AutoTokenizer.from_pretrained(path)
    cands, _ = spec_candidates(spec)
    words = [w[0][0] for w in cands]             # single-token label words (" negative", " positive")
    assert all(len(w) == 1 and len(w[0]) == 1 for w in cands), "the anchor handles single-token words"
    train, val = rows(spec, path, "train"), rows(spec, path, "validation")
    torch.manual_seed(a.seed)
    base = AutoModelForCausalLM.from_pretrained(path)
    model = get_peft_model(base, peft_config(spec, base.config.hidden_size))
    # Input-level virtual tokens come back as logit rows; a prefix lives in the cache and does not.
    n_virtual = spec.method.num_virtual_tokens if spec.method.name in ("prompt_tuning", "p_tuning") else 0

    def collate(batch):
        n = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), n), tok.pad_token_id)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, :len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["label"] for r in batch]),
                "score_pos": torch.tensor([r["score_pos"] for r in batch])}

    def scores(model, batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = out.logits[torch.arange(len(batch["labels"])), batch["score_pos"] + n_virtual]
        return torch.log_softmax(logits.float(), -1)[:, words]

    class VerbalizerTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            return F.cross_entropy(scores(model, inputs), inputs["labels"])

    t = spec.train
    steps_per_epoch = len(train) // t.batch_size
    max_steps = t.max_steps or int(t.epochs * steps_per_epoch)
    args = TrainingArguments(output_dir=os.path.dirname(a.out) + "/hf-tmp", per_device_train_batch_size=t.batch_size,
                             learning_rate=t.lr, max_steps=max_steps, warmup_steps=math.ceil(max_steps * t.warmup_ratio),
                             lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=t.max_grad_norm,
                             logging_steps=10**6, save_strategy="no", report_to=[], seed=a.seed,
                             remove_unused_columns=False, dataloader_drop_last=True, use_cpu=True,
                             train_sampling_strategy="group_by_length")
    trainer = VerbalizerTrainer(model=model, args=args, train_dataset=train, data_collator=collate)
    t1 = time.time()
    trainer.train()
    train_s = time.time() - t1
    model.eval()
    correct = 0
    val.sort(key=lambda r: len(r["input_ids"]))   # accuracy is a sum: score similar lengths together (less padding)
    with torch.no_grad():
        for i in range(0, len(val), t.eval_batch_size):
            b = collate(val[i:i + t.eval_batch_size])
            correct += int((scores(model, b).argmax(-1) == b["labels"]).sum())
    json.dump({"accuracy": correct / len(val), "n_eval": len(val), "steps": args.max_steps,
               "samples_per_s": args.max_steps * t.batch_size / train_s, "train_seconds": train_s,
               "wall_seconds": time.time() - t0}, open(a.out, "w"))


if __name__ == "__main__":
    main()
