"""Task metrics. Classification metrics come from a confusion matrix, so
workers can sum their matrices and every rank computes the same numbers."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np


def confusion(preds: Sequence[int], labels: Sequence[int], k: int) -> np.ndarray:
    m = np.zeros((k, k), dtype=np.int64)  # rows: gold, cols: predicted
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
    out = {"accuracy": float(tp.sum() / total) if total else 0.0,
           "macro_f1": float(f1.mean()) if len(f1) else 0.0}
    for i, name in enumerate(label_names):
        out[f"precision/{name}"] = float(prec[i])
        out[f"recall/{name}"] = float(rec[i])
        out[f"f1/{name}"] = float(f1[i])
    return out
