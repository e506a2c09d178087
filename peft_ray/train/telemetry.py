"""Live training metrics for Ray's dashboard and Prometheus (``ray.util.metrics``).

Ray exports a worker's custom metrics through the metrics agent of the node it runs
on (``ray start --metrics-export-port=PORT`` -> ``http://NODE:PORT/metrics``), with a
``ray_`` prefix: ``peft_ray_train_loss`` is scraped as ``ray_peft_ray_train_loss``.
A name outside ``[a-zA-Z_:][a-zA-Z0-9_:]*`` is dropped by Ray with only a warning,
so the names live in one table that a unit test checks.

Rank 0 records the training metrics (tags: job, trial). Every rank records one
``peft_ray_worker_placement`` series (tags: rank, node) so the dashboard shows
which node runs which rank. Outside a Ray Train worker (``--local``, unit tests)
everything here is a no-op, and a metrics failure never stops training.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from peft_ray import dist as D

TAGS: Tuple[str, ...] = ("job", "trial")


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str                             # "gauge" | "counter" (Prometheus adds _total to counters)
    help: str
    extra_tags: Tuple[str, ...] = ()


METRICS: Tuple[MetricDef, ...] = (
    MetricDef("peft_ray_train_loss", "gauge", "training loss of rank 0's latest micro-batch"),
    MetricDef("peft_ray_eval_metric", "gauge", "latest evaluation result, one series per metric name",
              ("metric",)),
    MetricDef("peft_ray_samples_per_second", "gauge", "training samples per second, all workers"),
    MetricDef("peft_ray_tokens_per_second", "gauge", "real (unpadded) training tokens per second, all workers"),
    MetricDef("peft_ray_step", "gauge", "optimizer steps done in this run"),
    MetricDef("peft_ray_optimizer_steps", "counter", "optimizer steps taken by this worker process"),
    MetricDef("peft_ray_learning_rate", "gauge", "learning rate of the first parameter group"),
    MetricDef("peft_ray_gpu_memory_allocated_bytes", "gauge", "torch.cuda.memory_allocated on rank 0"),
    MetricDef("peft_ray_gpu_memory_reserved_bytes", "gauge", "torch.cuda.memory_reserved on rank 0"),
    MetricDef("peft_ray_gpu_max_memory_allocated_bytes", "gauge", "torch.cuda.max_memory_allocated on rank 0"),
    MetricDef("peft_ray_worker_placement", "gauge", "1 for each (rank, node) of the worker group",
              ("rank", "node")),
)


class Telemetry:
    """The metric objects of one run in this process (created once, on first use)."""

    def __init__(self, job: str, trial: str):
        from ray.util import metrics as M

        self.tags = {"job": job, "trial": trial}
        self.m = {}
        for d in METRICS:
            cls = M.Gauge if d.kind == "gauge" else M.Counter
            self.m[d.name] = cls(d.name, description=d.help, tag_keys=TAGS + d.extra_tags)
        self.placed = False

    def set(self, name: str, value: float, **extra: str) -> None:
        self.m[name].set(float(value), tags={**self.tags, **extra})

    def on_step(self, step: int, loss: float, lr: float, samples_per_s: float, tokens_per_s: float) -> None:
        self.set("peft_ray_step", step)
        self.set("peft_ray_train_loss", loss)
        self.set("peft_ray_learning_rate", lr)
        self.set("peft_ray_samples_per_second", samples_per_s)
        self.set("peft_ray_tokens_per_second", tokens_per_s)
        self.m["peft_ray_optimizer_steps"].inc(1.0, tags=self.tags)
        self.gpu_memory()

    def on_eval(self, metrics: Dict[str, float]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.set("peft_ray_eval_metric", value, metric=str(key))

    def gpu_memory(self) -> None:
        import torch

        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            return
        self.set("peft_ray_gpu_memory_allocated_bytes", torch.cuda.memory_allocated())
        self.set("peft_ray_gpu_memory_reserved_bytes", torch.cuda.memory_reserved())
        self.set("peft_ray_gpu_max_memory_allocated_bytes", torch.cuda.max_memory_allocated())

    def place(self, rank: int) -> None:
        import ray

        if not self.placed:
            self.set("peft_ray_worker_placement", 1, rank=str(rank), node=ray.get_runtime_context().get_node_id())
            self.placed = True


_RUNS: Dict[Tuple[str, str], Optional[Telemetry]] = {}   # per process, filled on first use (not on import)


def for_run(job: str) -> Optional[Telemetry]:
    """This process's Telemetry for `job`, or None outside a Ray Train worker."""
    trial = _trial_name()
    if trial is None:
        return None
    key = (job, trial)
    if key not in _RUNS:
        _RUNS[key] = Telemetry(job, trial)
    return _RUNS[key]


def _trial_name() -> Optional[str]:
    """The Ray Train run name (unique per run and per Tune trial), or None outside Ray Train."""
    ray = sys.modules.get("ray")   # never import Ray just to find out we are not in it
    if ray is None or not ray.is_initialized():
        return None
    try:
        import ray.train

        return ray.train.get_context().get_experiment_name()
    except Exception:  # not inside a Ray Train worker
        return None


def _safely(fn):
    """Metrics are best-effort: warn once, then turn them off for this process."""
    def wrapped(*args, **kwargs):
        global _broken
        if _broken:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - a dashboard problem must not end a long run
            _broken = True
            D.log_rank0(f"warning: live metrics turned off ({type(e).__name__}: {e})")
    return wrapped


_broken = False


@_safely
def record_step(t: Optional[Telemetry], state, lr: float) -> None:
    """After each optimizer step (recipe.after_optimizer_step): rank 0's progress, every rank's node.
    `t`: the run's Telemetry (for_run, once per run), None outside Ray Train."""
    if t is None:
        return
    t.place(D.rank())
    if D.rank() != 0:
        return
    secs = max(state.train_seconds, 1e-9)
    t.on_step(state.global_step, state.last_loss, lr, state.samples / secs, state.tokens / secs)


@_safely
def record_report(t: Optional[Telemetry], metrics: Dict[str, float], evaluated: Dict[str, float]) -> None:
    """At each report (recipe.report): rank 0's evaluation results and throughput."""
    if t is None or D.rank() != 0:
        return
    t.on_eval(evaluated)
    t.set("peft_ray_samples_per_second", metrics.get("samples_per_s", 0.0))
    t.set("peft_ray_tokens_per_second", metrics.get("tokens_per_s", 0.0))
