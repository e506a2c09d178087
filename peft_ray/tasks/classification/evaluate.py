"""Classification's evaluation pass: accuracy, macro-F1, per-class P/R/F1 and loss from a
confusion matrix summed over workers (tasks/evaluate: the lockstep sharding every task shares)."""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

import torch
import torch.nn.functional as F

from peft_ray.data.batching import micro_batches
from peft_ray.dist import all_sum, all_sum_tensor
from peft_ray.metrics import add_confusion, classification_metrics
from peft_ray.tasks.evaluate import eval_scope, forward_logits, lockstep_batches


def evaluate(engine, tables: Optional[Iterable], labels: list, pad_id: int, batch_size: int,
             logits_fn: Callable = forward_logits) -> Dict[str, float]:
    """Classification: accuracy, macro-F1, per-class P/R/F1 and loss; `logits_fn` gives (B, K) scores."""
    if tables is None:
        return {}
    k = len(labels)
    cm = torch.zeros(k, k, dtype=torch.float64)
    loss_sum = 0.0
    batches = micro_batches(tables, batch_size, pad_id=pad_id, seed=0, group_by_length=True, drop_last=False)
    dummy = {"input_ids": [pad_id], "label": 0, "score_pos": 0}   # a one-token row for a worker with none
    with eval_scope(engine):
        for batch, real in lockstep_batches(batches, lambda: dummy):
            logits = logits_fn(engine, batch)
            if not real:
                continue  # lockstep filler
            y = batch["labels"].to(logits.device)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            pred = logits.argmax(-1).cpu().numpy()
            add_confusion(cm.numpy(), batch["labels"].numpy(), pred)
    cm = all_sum_tensor(cm)
    n = cm.sum().item()
    loss = all_sum([loss_sum])[0] / max(n, 1)
    return {**classification_metrics(cm.numpy(), labels), "loss": loss, "n_eval": int(n)}
