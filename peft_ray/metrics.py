"""Task metrics. Classification metrics come from a confusion matrix, so
workers can sum their matrices and every rank computes the same numbers."""

from __future__ import annotations

import re
from typing import Dict, List, Sequence

import numpy as np


def lower_is_better(metric: str) -> bool:
    """A loss is minimised, everything else maximised. Per-class metrics are `kind/label`, and only
    the kind counts: a class named "loss" gives `f1/loss`, which is an F1."""
    kind = metric.split("/", 1)[0]
    return kind == "loss" or kind.endswith("_loss")


def add_confusion(m: np.ndarray, labels: Sequence[int], preds: Sequence[int]) -> np.ndarray:
    """Count each (gold, predicted) pair into `m` (rows: gold, cols: predicted), in place."""
    np.add.at(m, (np.asarray(labels, int), np.asarray(preds, int)), 1)
    return m


def classification_metrics(cm: np.ndarray, label_names: List[str]) -> Dict[str, float]:
    """accuracy, macro_f1 and per-class precision/recall/F1 from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    pred = cm.sum(0)
    gold = cm.sum(1)
    prec = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    rec = np.divide(tp, gold, out=np.zeros_like(tp), where=gold > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    # Macro F1 over the classes seen in gold or predictions, as sklearn's f1_score(average="macro")
    # and HF evaluate: a listed class absent from a small split would otherwise count as F1 0.
    seen = (gold + pred) > 0
    out = {"accuracy": float(tp.sum() / total) if total else 0.0,
           "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0}
    for i, name in enumerate(label_names):
        out[f"precision/{name}"] = float(prec[i])
        out[f"recall/{name}"] = float(rec[i])
        out[f"f1/{name}"] = float(f1[i])
    return out


# --- generation: SQuAD-style exact match and token F1, ROUGE-L ---------------------------------

def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces."""
    import string

    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(pred: str, ref: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(ref))


def token_f1(pred: str, ref: str) -> float:
    from collections import Counter

    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def _lcs(a: List[str], b: List[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_tokens(text: str) -> List[str]:
    """rouge_score's default tokenizer (what HF `evaluate`'s rouge uses, no stemmer): lower case,
    every run of other characters a separator; letters and digits of any script count (rouge_score
    keeps only a-z and 0-9, which scores a correct Russian or Japanese answer 0 and splits "Mädchen";
    on ASCII text the tokens are the same). Not SQuAD's normalisation: articles count."""
    return re.findall(r"[^\W_]+", text.lower())


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 (beta 1) as rouge_score computes it: 0 where either side has no tokens."""
    p, r = rouge_tokens(pred), rouge_tokens(ref)
    if not p or not r:
        return 0.0
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def generation_metrics(preds: Sequence[str], refs: Sequence[str]) -> Dict[str, float]:
    """SQuAD's normalised exact match and token F1, ROUGE-L, and `exact_match_cased`: the reply as
    written (only outer whitespace stripped), for answers whose case or punctuation is the point
    ("Write this word in capital letters": "rocket" is no answer to it, but SQuAD's match takes it)."""
    n = max(len(refs), 1)
    return {"exact_match": sum(map(exact_match, preds, refs)) / n,
            "exact_match_cased": sum(p.strip() == r.strip() for p, r in zip(preds, refs)) / n,
            "token_f1": sum(map(token_f1, preds, refs)) / n,
            "rouge_l": sum(map(rouge_l, preds, refs)) / n}


def translation_metrics(preds: Sequence[str], refs: Sequence[str]) -> Dict[str, float]:
    """Corpus BLEU and chrF from sacrebleu (its default 13a tokenisation), plus exact match."""
    import sacrebleu

    preds, refs = list(preds), list(refs)
    return {"bleu": sacrebleu.corpus_bleu(preds, [refs]).score,
            "chrf": sacrebleu.corpus_chrf(preds, [refs]).score,
            "exact_match": sum(p.strip() == r.strip() for p, r in zip(preds, refs)) / max(len(refs), 1)}


# --- token classification: IOB2 entities with conlleval/seqeval semantics ----------------------

def _split_tag(tag: str):
    if tag == "O" or len(tag) < 3 or tag[1] != "-":
        return "O", ""
    return tag[0], tag[2:]


def entities(tags: Sequence[str]) -> List[tuple]:
    """(type, start, end_exclusive) spans, as seqeval's default (conlleval) mode reads IOB2: an I-
    tag with no B- before it, or after another type, starts a new entity."""
    out, start, etype = [], None, ""
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, t = _split_tag(tag)
        ends = start is not None and (prefix in ("O", "B") or t != etype)
        if ends:
            out.append((etype, start, i))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, etype = i, t
    return out


def repair_iob2(tags: Sequence[str]) -> List[str]:
    """Predicted tags made valid IOB2: an I-X that does not continue an X entity becomes B-X."""
    out, prev = [], "O"
    for tag in tags:
        prefix, t = _split_tag(tag)
        if prefix == "I" and _split_tag(prev)[1] != t:
            tag = f"B-{t}"
        out.append(tag)
        prev = tag
    return out


def entity_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict[str, Dict[str, int]]:
    """Per type: true positives, predicted and gold entity counts (sums across workers)."""
    counts: Dict[str, Dict[str, int]] = {}
    for g, p in zip(gold, pred):
        ge = {(t, s, e) for t, s, e in entities(g)}
        pe = {(t, s, e) for t, s, e in entities(p)}
        for t, *_ in ge | pe:
            counts.setdefault(t, {"tp": 0, "pred": 0, "gold": 0})
        for t, *_ in ge & pe:
            counts[t]["tp"] += 1
        for t, *_ in pe:
            counts[t]["pred"] += 1
        for t, *_ in ge:
            counts[t]["gold"] += 1
    return counts


def entity_metrics(counts: Dict[str, Dict[str, int]], types: Sequence[str] = ()) -> Dict[str, float]:
    """Micro precision/recall/F1 over all entities (seqeval's f1_score default) plus per type: every
    type of `types` (the job's labels) too, 0.0 where no entity of it was gold or predicted, so a
    per-type train.metric_for_best is reported at every evaluation."""
    def prf(tp, p, g):
        prec = tp / p if p else 0.0
        rec = tp / g if g else 0.0
        return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)

    tot = {k: sum(c[k] for c in counts.values()) for k in ("tp", "pred", "gold")}
    prec, rec, f1 = prf(tot["tp"], tot["pred"], tot["gold"])
    out = {"entity_precision": prec, "entity_recall": rec, "entity_f1": f1}
    none = {"tp": 0, "pred": 0, "gold": 0}
    for t in sorted(set(counts) | set(types)):
        c = counts.get(t, none)
        out[f"f1/{t}"] = prf(c["tp"], c["pred"], c["gold"])[2]
    return out
