"""The toy regression task, model side: a 1-output head, MSE loss, MSE evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F

from peft_ray.data.batching import micro_batches
from peft_ray.dist import all_sum
from peft_ray.models import load_classifier
from peft_ray.tasks.evaluate import eval_scope, forward_logits, lockstep_batches
from tests.tasks.toy_regression import DUMMY


@dataclass(frozen=True)
class Runtime:
    eval_batch_size: int


def load_base(spec, path: str):
    return load_classifier(path, 1, seed=spec.train.seed, trust_remote_code=spec.model.trust_remote_code)


def runtime(spec, path: str) -> Runtime:
    return Runtime(spec.train.eval_batch_size)


def predictions(model, batch: dict) -> torch.Tensor:
    return forward_logits(model, batch)[:, 0]                              # (B,)


def loss(model, batch: dict, rt: Runtime) -> torch.Tensor:
    pred = predictions(model, batch)
    return F.mse_loss(pred, batch["labels"].to(pred.device).float())


def evaluate(model, tables, rt: Runtime, pad_id: int) -> Dict[str, float]:
    if tables is None:
        return {}
    sq, n = 0.0, 0
    batches = micro_batches(tables, rt.eval_batch_size, pad_id=pad_id, seed=0, group_by_length=True, drop_last=False)
    with eval_scope(model):
        for batch, real in lockstep_batches(batches, lambda: DUMMY):
            pred = predictions(model, batch)
            if real:
                sq += float(((pred - batch["labels"].to(pred.device).float()) ** 2).sum())
                n += len(pred)
    sq, n = all_sum([sq, n])
    mse = sq / max(n, 1)
    return {"mse": mse, "loss": mse, "n_eval": int(n)}


def predict(model, batch: dict, rt: Runtime) -> Dict[str, list]:
    with torch.no_grad():
        return {"prediction": predictions(model, batch).float().cpu().tolist()}
