"""Evaluation on the full validation set, sharded by micro-batch over workers.

Workers run the same number of forward passes (ZeRO-3 forwards are collective):
a worker that runs out of batches repeats its last batch and discards the result.
"""

from __future__ import annotations

import itertools
from typing import Dict, Iterable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from peft_ray.data.batching import micro_batches
from peft_ray.metrics import classification_metrics
from peft_ray.train.dist import all_sum, all_sum_tensor, rank, world


def _my_batches(batches: Iterator[dict]) -> Iterator[dict]:
    return itertools.islice(batches, rank(), None, world())


def _dummy(pad_id: int) -> dict:
    """A one-token batch for a worker that has seen no validation batch at all."""
    return {"input_ids": torch.full((1, 1), pad_id), "attention_mask": torch.ones(1, 1, dtype=torch.long)}


def forward_logits(engine, batch: dict) -> torch.Tensor:
    out = engine(input_ids=batch["input_ids"].to(engine.device),
                 attention_mask=batch["attention_mask"].to(engine.device))
    return out.logits.float()


def evaluate(engine, tables: Optional[Iterable], labels: list, pad_id: int, batch_size: int) -> Dict[str, float]:
    if tables is None:
        return {}
    engine.eval()
    k = len(labels)
    cm = torch.zeros(k, k, dtype=torch.float64)
    loss_sum, last = 0.0, None
    mine = _my_batches(micro_batches(tables, batch_size, pad_id=pad_id, seed=0,
                                     group_by_length=True, drop_last=False))
    with torch.no_grad():
        while True:
            batch = next(mine, None)
            if all_sum([batch is not None])[0] == 0:
                break
            logits = forward_logits(engine, batch or last or _dummy(pad_id))
            if batch is None:
                continue  # lockstep filler
            last = batch
            y = batch["labels"].to(logits.device)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            pred = logits.argmax(-1).cpu().numpy()
            np.add.at(cm.numpy(), (batch["labels"].numpy(), pred), 1)
    engine.train()
    cm = all_sum_tensor(cm)
    n = cm.sum().item()
    loss = all_sum([loss_sum])[0] / max(n, 1)
    return {**classification_metrics(cm.numpy(), labels), "loss": loss, "n_eval": int(n)}
