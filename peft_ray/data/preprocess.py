"""The one Ray Data `map_batches` function (also run in-process for --local): the hold-out
split, few-shot sampling, then the task's own row builder. Which builder, and its config, come
in `PreprocessConfig` (made by tasks/pipeline.make_preprocess_config): this layer never asks
what the task is."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import pyarrow as pa

from peft_ray.data.columns import check_text_lengths
from peft_ray.data.fewshot import keep_shots
from peft_ray.data.holdout import apply_holdout


@dataclass(frozen=True)
class PreprocessConfig:
    """Flat and picklable: it is shipped to Ray Data tasks."""

    rows: Callable[[pa.Table, Any], pa.Table]   # the task's row builder (a module-level function)
    task: Any                           # its frozen config (tasks/<name>/rows.py)
    columns: Tuple[str, ...] = ()       # the columns the task reads (hold-out hash)
    holdout_fraction: float = 0.0
    holdout_seed: int = 0
    holdout_side: str = ""              # "" | "train" | "validation"
    label_column: Optional[str] = None  # data.train_shots: the class column and its labels
    labels: Tuple[str, ...] = ()
    shots_thresholds: Tuple[int, ...] = ()   # data.train_shots (train split only): see data/fewshot.py
    shots_seed: int = 0
    max_length: int = 0                 # model.max_length: no row may hold more text than it could use (0: unchecked)


_LOCK = threading.Lock()


def preprocess(batch: pa.Table, cfg: PreprocessConfig) -> pa.Table:
    """Hold-out split, few-shot rows, then the task's row builder.

    Serialized per process: Ray Data may call it from several threads, and the first call
    imports transformers (and with it torch); two threads importing torch at once fail with
    "partially initialized module 'torch'". One Ray task runs one batch at a time anyway."""
    with _LOCK:
        if cfg.max_length:   # predict and eval inputs too, which no pre-flight scan reads
            check_text_lengths(batch, list(cfg.columns), cfg.max_length, "data", None)
        batch = apply_holdout(batch, list(cfg.columns), cfg.holdout_fraction, cfg.holdout_seed, cfg.holdout_side)
        if cfg.shots_thresholds:
            batch = keep_shots(batch, cfg.columns, cfg.label_column, cfg.labels, cfg.shots_thresholds,
                               cfg.shots_seed)
        return cfg.rows(batch, cfg.task)
