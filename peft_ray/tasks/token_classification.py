"""Token classification (NER) with IOB2 tags.

Words are tokenized with `is_split_into_words`; each word's label sits on its
first sub-token and the other sub-tokens are ignored (-100), so predictions map
back to words one to one. Hard text in the template (e.g. "{soft} Entities: {tokens}")
becomes extra words with no label. Predicted tag sequences are repaired to valid
IOB2 (an I-X that continues nothing becomes B-X) before entity-level scoring with
seqeval's default (conlleval) semantics.
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from peft_ray.metrics import entity_counts, entity_metrics, repair_iob2
from peft_ray.models import load_auto
from peft_ray.tasks.base import TASKS, TaskImpl
from peft_ray.tasks.lm_common import seq_logits
from peft_ray.tasks.rows.token_classification import tag_names
from peft_ray.tasks.rows.tokens import IGNORE
from peft_ray.train import dist as D


def load_base(spec, path: str):
    tags = tag_names(spec.task.labels)
    return load_auto(path, "AutoModelForTokenClassification", seed=spec.train.seed, num_labels=len(tags),
                     id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)},
                     trust_remote_code=spec.model.trust_remote_code, allow_pickle=spec.model.allow_pickle)


# --- training and evaluation -----------------------------------------------------------------

def token_logits(engine, batch: dict) -> torch.Tensor:
    ids = batch["input_ids"].to(engine.device)
    out = engine(input_ids=ids, attention_mask=batch["attention_mask"].to(engine.device))
    return seq_logits(out.logits, ids.shape[1]).float()                    # (B, n, tags)


def loss(engine, batch: dict, spec=None) -> torch.Tensor:
    logits = token_logits(engine, batch)
    return F.cross_entropy(logits.flatten(0, 1), batch["labels"].to(logits.device).flatten(), ignore_index=IGNORE)


def word_tags(logits: torch.Tensor, batch: dict, names: List[str]) -> List[List[str]]:
    """Per row, one predicted tag per data word (words cut by truncation get O), IOB2-repaired."""
    pred = logits.argmax(-1).cpu().tolist()
    out = []
    for row, positions in zip(pred, batch["meta"]["word_pos"]):
        out.append(repair_iob2([names[row[p]] if p >= 0 else "O" for p in positions]))
    return out


DUMMY = {"input_ids": [0], "target_ids": [IGNORE], "word_pos": [], "gold": [], "length": 1, "truncated": False}


def evaluate(engine, tables, spec, pad_id: int) -> Dict[str, float]:
    from peft_ray.train.evaluate import sequence_eval

    if tables is None:
        return {}
    names = tag_names(spec.task.labels)

    def step(batch):
        logits = token_logits(engine, batch)
        gold = [[names[t] for t in g] for g in batch["meta"]["gold"]]
        return logits, list(zip(gold, word_tags(logits, batch, names)))

    pairs, loss = sequence_eval(engine, tables, spec, pad_id, lambda: DUMMY, step)
    pairs = D.all_gather_list(pairs)
    gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
    words = sum(len(g) for g in gold)
    acc = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p)) / max(words, 1)
    return {**entity_metrics(entity_counts(gold, pred)), "token_accuracy": acc, "loss": loss, "n_eval": len(gold)}


def predict(engine, batch: dict, spec, tok) -> Dict[str, list]:
    with torch.no_grad():
        return {"prediction": word_tags(token_logits(engine, batch), batch, tag_names(spec.task.labels))}


TASKS.register("token_classification")(TaskImpl(
    name="token_classification", load_base=load_base, loss=loss, evaluate=evaluate,
    primary_metric="entity_f1", headline=("entity_f1", "entity_precision", "entity_recall"), predict=predict))
