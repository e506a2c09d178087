"""Text classification: a trained head (encoders; HF PEFT's SEQ_CLS layout) or verbalizer
scoring by the LM head (masked or causal LMs; see tasks/verbalizer.py).

`task.head: auto` picks the head for encoders and the verbalizer for causal LMs.
"""

from __future__ import annotations

import functools
from typing import Dict, List

import torch
import torch.nn.functional as F

from peft_ray.data.preprocess import classification_scoring_for
from peft_ray.models import lm_kind, load_auto, load_classifier, resolve_model_path
from peft_ray.tasks import verbalizer
from peft_ray.tasks.base import TASKS, TaskImpl
from peft_ray.train.evaluate import evaluate, forward_logits

LM_HEADS = {"mlm": "AutoModelForMaskedLM", "causal": "AutoModelForCausalLM"}


def scoring(spec) -> str:
    """head, mlm or causal; looked up once per job (the loss asks on every micro-step)."""
    return _scoring(spec.model.name_or_path, spec.model.trust_remote_code, spec.task.head)


@functools.lru_cache(maxsize=16)
def _scoring(name_or_path: str, trust_remote_code: bool, head: str) -> str:
    kind = lm_kind(resolve_model_path(name_or_path), trust_remote_code)
    return classification_scoring_for(head, kind)


def load_base(spec, path: str):
    how = scoring(spec)
    if how == "head":
        return load_classifier(path, len(spec.task.labels), seed=spec.train.seed,
                               trust_remote_code=spec.model.trust_remote_code,
                               allow_pickle=spec.model.allow_pickle)
    return load_auto(path, LM_HEADS[how], seed=spec.train.seed, trust_remote_code=spec.model.trust_remote_code,
                     allow_pickle=spec.model.allow_pickle)


def loss(engine, batch: dict, spec=None) -> torch.Tensor:
    if spec is not None and scoring(spec) != "head":
        return verbalizer.loss(engine, batch, spec)
    out = engine(input_ids=batch["input_ids"].to(engine.device),
                 attention_mask=batch["attention_mask"].to(engine.device))
    return F.cross_entropy(out.logits.float(), batch["labels"].to(engine.device))


def logits_fn(spec):
    return forward_logits if scoring(spec) == "head" else verbalizer.scorer(spec)


def evaluate_task(engine, tables, spec, pad_id: int):
    return evaluate(engine, tables, spec.task.labels, pad_id, spec.train.eval_batch_size, logits_fn(spec))


def predict(engine, batch: dict, spec, tok) -> Dict[str, List]:
    """The predicted label and every label's probability."""
    with torch.no_grad():
        probs = torch.softmax(logits_fn(spec)(engine, batch).float(), dim=-1).cpu()
    labels = spec.task.labels
    return {"prediction": [labels[i] for i in probs.argmax(-1).tolist()],
            "scores": [dict(zip(labels, map(float, row))) for row in probs.tolist()]}


TASKS.register("classification")(TaskImpl(
    name="classification", load_base=load_base, loss=loss,
    evaluate=evaluate_task, primary_metric="accuracy", predict=predict))
