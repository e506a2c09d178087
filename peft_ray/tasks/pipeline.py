"""What the data layer needs from a job, asked of its task: the columns it reads, and the
`PreprocessConfig` (hold-out, few-shot, the task's row builder) that Ray Data ships to workers."""

from __future__ import annotations

from typing import Dict, List, Tuple

from peft_ray.data.fewshot import shot_thresholds
from peft_ray.data.preprocess import PreprocessConfig
from peft_ray.data.sources import resolve_files
from peft_ray.models import lm_kind
from peft_ray.tasks import get_task
from peft_ray.templates import Template


def input_fields(spec) -> Dict[str, str]:
    """Each input column (what `predict` needs) -> the job field that names it (for errors)."""
    task = get_task(spec.task.type)
    out = {c: "template.text" for c in Template.parse(spec.template.text).columns} \
        if task.reads_template_columns() else {}
    return {**out, **task.input_columns(spec.task)}


def column_fields(spec) -> Dict[str, str]:
    """Each column training reads (inputs, then the supervision columns) -> the field naming it."""
    return {**input_fields(spec), **get_task(spec.task.type).supervision_columns(spec.task)}


def needed_columns(spec) -> List[str]:
    return list(column_fields(spec))


def input_columns(spec) -> List[str]:
    """The columns a row needs to be predicted on (no label, target or tags)."""
    return list(input_fields(spec))


def shots_seed(spec) -> int:
    return spec.train.seed if spec.data.shots_seed is None else spec.data.shots_seed


def holdout_seed(spec) -> int:
    return spec.train.seed if spec.data.holdout_seed is None else spec.data.holdout_seed


def few_shot_thresholds(spec) -> Tuple[int, ...]:
    """data.train_shots: each class's hash threshold (one pass over train, cached); () when unset."""
    if not spec.data.train_shots:
        return ()
    task = get_task(spec.task.type)
    holdout = spec.data.holds_out
    files = tuple(resolve_files(spec.data.root, spec.data.train, "data.train"))
    return shot_thresholds(files, tuple(needed_columns(spec)), task.label_column(spec.task),
                           task.classes(spec.task), spec.data.train_shots, shots_seed(spec),
                           (spec.data.validation_fraction if holdout else 0.0, holdout_seed(spec)))


def make_preprocess_config(spec, tokenizer_path: str, split: str = "train") -> PreprocessConfig:
    """`split` picks the side of a `data.validation_fraction` hold-out ("train" or "validation")."""
    task = get_task(spec.task.type)
    rows, rows_cfg = task.row_builder(spec, tokenizer_path, lm_kind(tokenizer_path, spec.model.trust_remote_code))
    holdout = spec.data.holds_out
    return PreprocessConfig(
        rows=rows, task=rows_cfg, columns=tuple(needed_columns(spec)),
        holdout_fraction=spec.data.validation_fraction if holdout else 0.0, holdout_seed=holdout_seed(spec),
        holdout_side=split if holdout else "", label_column=task.label_column(spec.task),
        labels=task.classes(spec.task),
        shots_thresholds=few_shot_thresholds(spec) if split == "train" else (), shots_seed=shots_seed(spec),
        max_length=spec.model.max_length)
