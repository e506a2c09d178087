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

import pyarrow as pa
import torch
import torch.nn.functional as F

from peft_ray.data.batching import IGNORE
from peft_ray.errors import DataError
from peft_ray.metrics import entity_counts, entity_metrics, repair_iob2
from peft_ray.models import load_auto
from peft_ray.tasks.base import TASKS, TaskImpl
from peft_ray.tasks.lm_common import seq_logits, tokenizer
from peft_ray.templates import Template
from peft_ray.train import dist as D


def tag_names(entity_types) -> List[str]:
    """O, B-T1, I-T1, B-T2, I-T2, ... (the label-id order of the head)."""
    return ["O"] + [f"{p}-{t}" for t in entity_types for p in ("B", "I")]


def load_base(spec, path: str):
    tags = tag_names(spec.task.labels)
    return load_auto(path, "AutoModelForTokenClassification", seed=spec.train.seed, num_labels=len(tags),
                     id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)},
                     trust_remote_code=spec.model.trust_remote_code, allow_pickle=spec.model.allow_pickle)


# --- preprocessing ---------------------------------------------------------------------------

def _tag_ids(tags: list, names: List[str], row_no: int, column: str) -> List[int]:
    index = {t: i for i, t in enumerate(names)}
    out = []
    for t in tags:
        if isinstance(t, str) and t in index:
            out.append(index[t])
        elif isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(names):
            out.append(t)
        else:
            raise DataError(f"column '{column}', row {row_no}: tag {t!r} is not one of {names} (IOB2 tags of "
                            "task.labels, or their ids in that order); fix the row or add its type to task.labels")
    return out


def _words(template: Template, tokens: List[str]):
    """(words, index of the first data word): hard text becomes words without labels."""
    words, start = [], 0
    for p in template.parts:
        if p.kind == "text":
            words += p.value.split()
        elif p.kind == "column":
            start = len(words)
            words += [str(t) for t in tokens]
    return words, start


def preprocess(batch: pa.Table, cfg) -> pa.Table:
    tok = tokenizer(cfg.tokenizer_path, cfg.trust_remote_code)
    template = Template.parse(cfg.template)
    names = tag_names(cfg.labels)
    rows = []
    for n, row in enumerate(batch.to_pylist()):
        tokens, tags = row.get(cfg.tokens_column), row.get(cfg.tags_column)
        if not tokens or tags is None:
            continue
        if len(tokens) != len(tags):
            raise DataError(f"row {n} of a batch: '{cfg.tokens_column}' has {len(tokens)} words but "
                            f"'{cfg.tags_column}' has {len(tags)} tags; they must align one to one")
        rows.append(_encode(tok, template, tokens, _tag_ids(tags, names, n, cfg.tags_column), cfg.max_length))
    return pa.Table.from_pylist(rows, schema=SCHEMA)


SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("target_ids", pa.list_(pa.int32())),
                    ("word_pos", pa.list_(pa.int32())), ("gold", pa.list_(pa.int32())),
                    ("length", pa.int32()), ("truncated", pa.bool_())])


def _encode(tok, template: Template, tokens: List[str], tags: List[int], max_length: int) -> dict:
    words, start = _words(template, tokens)
    enc = tok(words, is_split_into_words=True, truncation=True, max_length=max_length)
    ids, word_ids = enc["input_ids"], enc.word_ids()
    target = [IGNORE] * len(ids)
    word_pos = [-1] * len(tokens)               # the token position of each data word (-1: truncated away)
    for pos, w in enumerate(word_ids):
        if w is None or w < start or w >= start + len(tokens) or (pos and word_ids[pos - 1] == w):
            continue
        target[pos] = tags[w - start]
        word_pos[w - start] = pos
    return {"input_ids": ids, "target_ids": target, "word_pos": word_pos, "gold": tags, "length": len(ids),
            "truncated": -1 in word_pos}


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
    name="token_classification", load_base=load_base, preprocess=preprocess, loss=loss, evaluate=evaluate,
    primary_metric="entity_f1", headline=("entity_f1", "entity_precision", "entity_recall"), predict=predict))
