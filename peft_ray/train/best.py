"""Which checkpoint is best, when to evaluate, when to stop early.

HF Trainer's `load_best_model_at_end` / `metric_for_best_model` /
`EarlyStoppingCallback`, as a few pure functions over TrainerState so the
bookkeeping is checkpointed with the rest of the position (a resume keeps it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple


EVALS_PER_EPOCH = 4   # default eval_every: a few evaluations per epoch, as a long job needs
LOW_SCORE = -1e30     # Ray's retention score of a checkpoint without an evaluation (kept only while latest)


@dataclass(frozen=True)
class BestPolicy:
    """Resolved once per job (train.metric_for_best, train.greater_is_better, patience)."""

    metric: str
    greater: bool
    patience: Optional[int] = None

    def score(self, metrics: Dict[str, float]) -> Optional[float]:
        """Higher is better whatever the direction; None when this evaluation lacks the metric."""
        value = metrics.get(self.metric)
        if not isinstance(value, (int, float)) or math.isnan(value):
            return None
        return float(value) if self.greater else -float(value)


def best_policy(train_spec, task) -> BestPolicy:
    """The task's primary metric by default, in the direction the task gives it (Task.lower_is_better)."""
    metric = train_spec.metric_for_best or task.primary_metric
    greater = train_spec.greater_is_better
    if greater is None:
        greater = not task.lower_is_better(metric)
    return BestPolicy(metric, greater, train_spec.early_stopping_patience)


def intervals(train_spec, steps_per_epoch: int) -> Tuple[int, int]:
    """(eval_every, checkpoint_every): explicit values win; unset, a few per epoch, and a
    checkpoint at every evaluation (so the best one is on disk)."""
    every = train_spec.eval_every or max(1, math.ceil(steps_per_epoch / EVALS_PER_EPOCH))
    return every, train_spec.checkpoint_every or every


def update_best(policy: BestPolicy, state, metrics: Dict[str, float]) -> bool:
    """Record this evaluation in `state`; True when it is a new best."""
    score = policy.score(metrics)
    if score is None:
        return False
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_step, state.evals_since_best = score, state.global_step, 0
        return True
    state.evals_since_best += 1
    return False


def should_stop(policy: BestPolicy, state) -> bool:
    return policy.patience is not None and state.evals_since_best >= policy.patience


def best_fields(policy: BestPolicy, state) -> Dict[str, float]:
    """What each report carries: the best so far and the score Ray keeps checkpoints by."""
    if state.best_score is None:
        return {"metric_for_best": policy.metric}
    value = state.best_score if policy.greater else -state.best_score
    return {"metric_for_best": policy.metric, "best_step": state.best_step, "best_metric": value}


def retention_score(policy: BestPolicy, metrics: Dict[str, float], new_best: bool) -> float:
    """Ray keeps the K highest-scoring checkpoints plus the latest: scoring by the metric
    means the best is never pruned (an un-evaluated checkpoint scores lowest). An evaluation that
    only ties the best scores one float step below it: the best is the earliest of equal scores
    (update_best's strict >, as HF's), and on a tie Ray kept the newer checkpoint and pruned it."""
    score = policy.score(metrics)
    if score is None:
        return LOW_SCORE
    return score if new_best else math.nextafter(score, -math.inf)
