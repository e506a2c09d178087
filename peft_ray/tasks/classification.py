"""Text classification with a trained head (encoders: HF PEFT's SEQ_CLS layout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from peft_ray.data.preprocess import preprocess_batch
from peft_ray.models import load_classifier
from peft_ray.tasks.base import TASKS, TaskImpl
from peft_ray.train.evaluate import evaluate


def load_base(spec, path: str):
    return load_classifier(path, len(spec.task.labels), seed=spec.train.seed,
                           trust_remote_code=spec.model.trust_remote_code,
                           allow_pickle=spec.model.allow_pickle)


def loss(engine, batch: dict) -> torch.Tensor:
    out = engine(input_ids=batch["input_ids"].to(engine.device),
                 attention_mask=batch["attention_mask"].to(engine.device))
    return F.cross_entropy(out.logits.float(), batch["labels"].to(engine.device))


def evaluate_task(engine, tables, spec, pad_id: int):
    return evaluate(engine, tables, spec.task.labels, pad_id, spec.train.eval_batch_size)


TASKS.register("classification")(TaskImpl(
    name="classification", load_base=load_base, preprocess=preprocess_batch, loss=loss,
    evaluate=evaluate_task, primary_metric="accuracy"))
