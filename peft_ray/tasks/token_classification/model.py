"""Token classification, model side: the token-classification head, the per-job runtime, the
first-sub-token loss, entity-level evaluation and `predict` output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

from peft_ray import dist as D
from peft_ray.metrics import entity_counts, entity_metrics, repair_iob2
from peft_ray.models import load_auto
from peft_ray.rows.tokens import IGNORE
from peft_ray.tasks.evaluate import sequence_eval
from peft_ray.tasks.lm_common import seq_logits
from peft_ray.tasks.token_classification.rows import DUMMY, tag_names


@dataclass(frozen=True)
class Runtime:
    names: Tuple[str, ...]              # IOB2 tags in label-id order
    eval_batch_size: int


def load_base(spec, path: str):
    tags = tag_names(spec.task.labels)
    return load_auto(path, "AutoModelForTokenClassification", seed=spec.train.seed, num_labels=len(tags),
                     id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)},
                     trust_remote_code=spec.model.trust_remote_code, allow_pickle=spec.model.allow_pickle)


def runtime(spec, path: str) -> Runtime:
    return Runtime(tuple(tag_names(spec.task.labels)), spec.train.eval_batch_size)


# --- training and evaluation -----------------------------------------------------------------

def token_logits(engine, batch: dict) -> torch.Tensor:
    ids = batch["input_ids"].to(engine.device)
    out = engine(input_ids=ids, attention_mask=batch["attention_mask"].to(engine.device))
    return seq_logits(out.logits, ids.shape[1]).float()                    # (B, n, tags)


def loss(engine, batch: dict, rt: Runtime = None) -> torch.Tensor:
    logits = token_logits(engine, batch)
    return F.cross_entropy(logits.flatten(0, 1), batch["labels"].to(logits.device).flatten(), ignore_index=IGNORE)


def word_tags(logits: torch.Tensor, batch: dict, names: List[str]) -> List[List[str]]:
    """Per row, one predicted tag per data word (words cut by truncation get O), IOB2-repaired."""
    pred = logits.argmax(-1).cpu().tolist()
    out = []
    for row, positions in zip(pred, batch["meta"]["word_pos"]):
        out.append(repair_iob2([names[row[p]] if p >= 0 else "O" for p in positions]))
    return out


def evaluate(engine, tables, rt: Runtime, pad_id: int) -> Dict[str, float]:
    if tables is None:
        return {}
    names = list(rt.names)

    def step(batch):
        logits = token_logits(engine, batch)
        gold = [[names[t] for t in g] for g in batch["meta"]["gold"]]
        return logits, list(zip(gold, word_tags(logits, batch, names)))

    pairs, loss = sequence_eval(engine, tables, rt.eval_batch_size, pad_id, lambda: DUMMY, step)
    pairs = D.all_gather_list(pairs)
    gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
    words = sum(len(g) for g in gold)
    acc = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p)) / max(words, 1)
    types = sorted({n[2:] for n in names if n[1:2] == "-"})           # B-PER, I-PER -> PER
    return {**entity_metrics(entity_counts(gold, pred), types), "token_accuracy": acc, "loss": loss, "n_eval": len(gold)}


def predict(engine, batch: dict, rt: Runtime) -> Dict[str, list]:
    with torch.no_grad():
        return {"prediction": word_tags(token_logits(engine, batch), batch, list(rt.names))}

