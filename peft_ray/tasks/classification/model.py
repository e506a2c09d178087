"""Classification, model side: the head or LM base, the per-job runtime, loss, evaluation, predict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from peft_ray.models import lm_kind, load_auto, load_classifier
from peft_ray.tasks.classification import verbalizer
from peft_ray.tasks.classification.config import scoring_for
from peft_ray.tasks.classification.evaluate import evaluate as evaluate_logits
from peft_ray.tasks.classification.readout import first_row_readout
from peft_ray.tasks.evaluate import forward_logits

LM_HEADS = {"mlm": "AutoModelForMaskedLM", "causal": "AutoModelForCausalLM"}


@dataclass(frozen=True)
class Runtime:
    """Resolved once per job: the loss and evaluation read this, never the spec."""

    labels: Tuple[str, ...]
    scoring: str                        # head | mlm | causal
    candidates: Optional[verbalizer.Candidates]   # verbalizer scoring: label words' token ids
    eval_batch_size: int

    def logits(self, model, batch: dict) -> torch.Tensor:
        """(B, K) class scores: the head's logits or the label words' log-mean-probabilities."""
        if self.scoring == "head":
            return forward_logits(model, batch)
        return verbalizer.label_scores(model, batch, self.candidates, self.scoring)


def load_base(spec, path: str):
    how = scoring_for(spec.task.head, lm_kind(path, spec.model.trust_remote_code))
    if how == "head":
        model = load_classifier(path, len(spec.task.labels), seed=spec.train.seed,
                                trust_remote_code=spec.model.trust_remote_code,
                                allow_pickle=spec.model.allow_pickle)
        first_row_readout(model)   # the head reads row 0 of the last layer: compute only that row (exact)
        return model
    return load_auto(path, LM_HEADS[how], seed=spec.train.seed, trust_remote_code=spec.model.trust_remote_code,
                     allow_pickle=spec.model.allow_pickle)


def runtime(spec, path: str) -> Runtime:
    if scoring_for(spec.task.head, lm_kind(path, spec.model.trust_remote_code)) == "head":
        return Runtime(tuple(spec.task.labels), "head", None, spec.train.eval_batch_size)
    cands, scoring = verbalizer.spec_candidates(spec, path)
    return Runtime(tuple(spec.task.labels), scoring, cands, spec.train.eval_batch_size)


def loss(model, batch: dict, rt: Runtime) -> torch.Tensor:
    scores = rt.logits(model, batch)
    return F.cross_entropy(scores, batch["labels"].to(scores.device))


def evaluate(model, tables, rt: Runtime, pad_id: int) -> Dict[str, float]:
    return evaluate_logits(model, tables, list(rt.labels), pad_id, rt.eval_batch_size, rt.logits)


def predict(model, batch: dict, rt: Runtime) -> Dict[str, List]:
    """The predicted label and every label's probability."""
    with torch.no_grad():
        probs = torch.softmax(rt.logits(model, batch).float(), dim=-1).cpu()
    labels = rt.labels
    return {"prediction": [labels[i] for i in probs.argmax(-1).tolist()],
            "scores": [dict(zip(labels, map(float, row))) for row in probs.tolist()]}

