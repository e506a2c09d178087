"""Everything `train` checks before any cluster work, shared with `validate`: the recipe
(run_preflight) over the model checks (model.py), the columns of every file (columns.py) and the
row scan (scan.py).

Reads only schemas, row counts and the label column (streamed with pyarrow); the text itself
stays on disk, except where `validate` tokenizes a sample (note_sample_cut).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

from peft_ray.data.sources import resolve_files
from peft_ray.errors import DataError
from peft_ray.preflight.model import check_model_and_method
from peft_ray.preflight.scan import (SplitFacts, file_batches, note_class_counts, note_shared_files, note_skipped,
                                     scan_split)
from peft_ray.spec.schema import JobSpec
from peft_ray.tasks import get_task
from peft_ray.tasks.pipeline import needed_columns


@dataclass
class Preflight:
    model_path: str
    train: Optional[SplitFacts]          # None only for run_preflight(training=False)
    validation: Optional[SplitFacts]
    steps_per_epoch: int
    total_steps: int
    data_files: Optional[dict] = None    # run_dir.data_fingerprints, made once where a run records them


def run_preflight(spec: JobSpec, training: bool = True) -> Preflight:
    """Every check before any cluster work. `training=False` (zero-shot evaluation): the training
    files are read only where the validation rows are held out of them, and nothing about training
    (batches, steps) is checked; `train` is then None unless held out from."""
    if spec.train.metric_for_best is not None:   # a name evaluation never reports: adapter/ would be the last step's
        get_task(spec.task.type).check_metric(spec.task, spec.train.metric_for_best, "train.metric_for_best")
    model_path = check_model_and_method(spec)
    holdout = spec.data.holds_out
    train_files = resolve_files(spec.data.root, spec.data.train, "data.train") if training or holdout else []
    train = None
    if training:
        train = scan_split(train_files, spec, "data.train", "train" if holdout else "")
        get_task(spec.task.type).check_train_facts(train)
        note_skipped("data.train", train)
        note_class_counts(spec, train)
    val = None
    if holdout:
        val = scan_split(train_files, spec, "data.validation_fraction", "validation")
    elif spec.data.validation:
        val_files = resolve_files(spec.data.root, spec.data.validation, "data.validation")
        if training:
            note_shared_files(train_files, val_files)
        val = scan_split(val_files, spec, "data.validation")
    if val is not None:
        note_skipped("data.validation_fraction" if holdout else "data.validation", val)
    check_label_kinds(spec, {"data.train": train, "data.validation": val})
    spe, total = count_steps(spec, train.usable) if train is not None else (0, 0)
    return Preflight(model_path, train, val, spe, total)


def count_steps(spec: JobSpec, usable_rows: int) -> tuple[int, int]:
    per_worker = usable_rows // spec.scaling.num_workers   # Ray splits into equal shards
    micro = per_worker // spec.micro_batch_size
    # An epoch's last step takes the micro-batches left (recipe.step_windows), as HF Trainer's.
    steps_per_epoch = math.ceil(micro / spec.train.grad_accum)
    if steps_per_epoch == 0:
        raise DataError(f"data.train: {usable_rows} usable rows are fewer than one batch "
                        f"(train.batch_size={spec.train.batch_size}); lower the batch size or add data")
    total = spec.train.max_steps or math.ceil(spec.train.epochs * steps_per_epoch)
    return steps_per_epoch, total


def note_sample_cut(spec: JobSpec, pre: Preflight, rows: int = 512) -> None:
    """`validate` only (it tokenizes, which the pre-flight of `train` leaves to the workers): the share of
    the first `rows` training rows that model.max_length cuts, as the task's own row builder cuts them.
    A new-user review: generation at max_length 8 cut every prompt, and `validate` said ok."""
    import sys

    from peft_ray.data.preprocess import preprocess
    from peft_ray.tasks.pipeline import make_preprocess_config

    if pre.train is None:
        return
    cfg = make_preprocess_config(spec, pre.model_path, "train")
    cut = seen = 0
    for _, _, batch in file_batches(pre.train.files, needed_columns(spec)):
        # the few-shot filter keeps K rows a class from anywhere in the files, and tokenizes only those
        built = preprocess(batch if cfg.shots_thresholds else batch.slice(0, rows - seen), cfg)
        if "truncated" not in built.column_names:     # a plugin task's rows need not count their cuts
            return
        cut += sum(built.column("truncated").to_pylist())
        seen += len(built)
        if seen >= rows:
            break
    if seen and cut / seen > 0.01:
        print(f"[peft-ray] note: model.max_length {spec.model.max_length} cuts {cut} of the first {seen} training "
              f"rows ({cut / seen:.0%}), template and special tokens included; what is cut never reaches the "
              "model. Raise model.max_length if that matters for this task", file=sys.stderr)


def check_label_kinds(spec: JobSpec, splits: Dict[str, Optional[SplitFacts]]) -> None:
    """Labels given as names somewhere and as ids elsewhere are refused: a name is read by name
    and an id as a position in task.labels, so reordering task.labels (or ids numbered in another
    order) turned one split's labels over and not the other's, without a word (a new-user review:
    validation accuracy 1.0 became 0.0)."""
    seen = {kind: (name, where) for name, facts in splits.items() if facts is not None
            for kind, where in facts.label_kinds.items()}
    if not {"name", "id"} <= seen.keys():
        return
    labels = get_task(spec.task.type).classes(spec.task)
    (name_field, (name_file, name)), (id_field, (id_file, id_)) = seen["name"], seen["id"]
    order = ", ".join(f"{i} = {label!r}" for i, label in enumerate(labels))
    raise DataError(f"{id_field} ({id_file}) gives labels as ids (e.g. {id_!r}) and {name_field} ({name_file}) as "
                    f"names (e.g. {name!r}). An id is read as a position in task.labels ({order}) and a name by "
                    "name, so wherever the ids were numbered in another order, those labels are silently "
                    "wrong. Give every file the same kind: the names, or ids in task.labels' order")
