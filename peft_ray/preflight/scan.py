"""The row scan of a split, one batch at a time: rows, usable rows, labels and where the first
skipped row is (SplitFacts), with the notes said from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import pyarrow as pa

from peft_ray.data.columns import check_text_lengths
from peft_ray.data.fewshot import keep_shots
from peft_ray.data.holdout import apply_holdout
from peft_ray.data.sources import iter_arrow
from peft_ray.errors import DataError
from peft_ray.preflight.columns import check_files_agree
from peft_ray.rows.labels import label_ids, label_kind
from peft_ray.spec.schema import JobSpec
from peft_ray.tasks import get_task
from peft_ray.tasks.pipeline import few_shot_thresholds, holdout_seed, needed_columns, shots_seed


@dataclass
class SplitFacts:
    files: List[str]
    rows: int = 0          # rows in the files
    usable: int = 0        # rows with text and label
    skipped: int = 0       # null/empty text or label
    label_counts: dict = field(default_factory=dict)
    label_kinds: dict = field(default_factory=dict)   # "name" | "id" -> (file, a value) where first seen
    first_skipped: str = ""   # where the first skipped row is and what it lacks, for the note


FILE_ROW = "\x00row"     # scan_split's own column: a row's number in its file (no data column is named so)


def scan_split(files: List[str], spec: JobSpec, field_name: str, holdout: str = "") -> SplitFacts:
    """Count rows, skip-able rows and labels, streaming one batch at a time. `holdout` ("train" or
    "validation") counts one side of the `data.validation_fraction` split of the training files."""
    check_files_agree(files, spec, field_name)
    facts = SplitFacts(files=files)
    cols = needed_columns(spec)
    task = get_task(spec.task.type)
    label_column, labels = task.label_column(spec.task), task.classes(spec.task)
    text_cols = [c for c in cols if c != label_column]
    shots = few_shot_thresholds(spec) if field_name == "data.train" else ()
    for path, first_row, batch in file_batches(files, cols):
        # before the hold-out and few-shot filters, so the file and row named are the file's own
        check_text_lengths(batch, text_cols, spec.model.max_length, f"{field_name} ({path})", first_row)
        if labels:   # on the file's own rows, before the filters: the row named is the file's
            values = batch.column(label_column).to_pylist()
            usable = task.usable(spec.task, batch, cols, text_cols).to_pylist()
            try:
                label_ids([v for v, good in zip(values, usable) if good], labels, label_column,
                          rows=[first_row + i for i, good in enumerate(usable) if good])
            except DataError as e:
                raise DataError(f"{field_name} ({path}): {e}") from None
        # each row's number in its file, carried through the filters below (which select rows, not columns)
        batch = batch.append_column(FILE_ROW, pa.array(range(first_row, first_row + len(batch)), pa.int64()))
        if holdout:
            batch = apply_holdout(batch, cols, spec.data.validation_fraction, holdout_seed(spec), holdout)
        if shots:
            batch = keep_shots(batch, tuple(cols), label_column, labels, shots, shots_seed(spec))
        facts.rows += len(batch)
        ok = task.usable(spec.task, batch, cols, text_cols)
        usable = batch.filter(ok)
        kept = usable.column(cols[-1]).to_pylist()
        row_numbers = usable.column(FILE_ROW).to_pylist()      # as the file numbers them (0-based)
        facts.skipped += len(batch) - len(kept)
        if len(kept) < len(batch) and not facts.first_skipped:
            facts.first_skipped = first_skipped(batch, ok, cols, path)
        try:
            task.check_supervision(spec.task, usable, row_numbers)
            ids = label_ids(kept, labels, label_column) if labels else []
        except DataError as e:
            raise DataError(f"{field_name} ({path}): {e}") from None
        for i in ids:
            facts.label_counts[labels[i]] = facts.label_counts.get(labels[i], 0) + 1
        for v in dict.fromkeys(kept) if labels else ():    # the batch's distinct values, in order
            kind = label_kind(v, labels)
            if kind not in facts.label_kinds:
                facts.label_kinds[kind] = (path, v)
    facts.usable = facts.rows - facts.skipped
    if facts.rows == 0 and holdout == "validation":
        raise DataError(f"{field_name}: holding out {spec.data.validation_fraction:g} of the training rows "
                        f"({', '.join(files[:2])}{' ...' if len(files) > 2 else ''}) held out none of them; "
                        "raise data.validation_fraction, or name a validation file (data.validation)")
    if facts.rows == 0:
        raise DataError(f"{field_name}: {files[0]} has no rows; point it at a file with data")
    if facts.usable == 0:
        raise DataError(f"{field_name}: every row of {files[0]} has empty text or no label/target")
    return facts


def first_skipped(batch: pa.Table, ok, cols: List[str], path: str) -> str:
    """Where a batch's first skipped row is (its row number in the file) and which column it lacks."""
    from peft_ray.data.columns import present

    i = ok.to_pylist().index(False)
    row = batch.slice(i, 1)
    lacks = [c for c in cols if not present(row.column(c))[0].as_py() or row.column(c)[0].as_py() == []]
    what = f"nothing in {', '.join(repr(c) for c in lacks)}" if lacks else "a value the task cannot read"
    return f"{path} row {row.column(FILE_ROW)[0].as_py()} (0-based) has {what}"


def note_skipped(field_name: str, facts: SplitFacts) -> None:
    """Rows a split skips (empty text, no label or target) are said with the first of them: the count
    alone left a user to guess, and in JSON Lines a row whose key is misspelt reads as one without it."""
    import sys

    if facts.skipped:
        print(f"[peft-ray] note: {field_name}: {facts.skipped} of {facts.rows} rows are skipped for an empty or "
              f"missing column, the first: {facts.first_skipped}. Fill or drop such rows (in JSON Lines, check "
              "the row's keys are spelt as the columns)", file=sys.stderr)


def file_batches(files: List[str], cols: List[str]):
    """(file, the number of its batch's first row, batch as a Table) for every batch of every file."""
    for path in files:
        first_row = 0
        for batch in iter_arrow([path], cols):
            if isinstance(batch, pa.RecordBatch):     # the filters below take Tables
                batch = pa.Table.from_batches([batch])
            yield path, first_row, batch
            first_row += len(batch)


def note_class_counts(spec: JobSpec, train: SplitFacts) -> None:
    """Said, not refused (a new-user review found both silent): a class of task.labels that no
    training row has (it can never be predicted for a reason learnt), and data.train_shots above
    what a class holds (the few-shot run then trains on every row of it, not K)."""
    import sys

    classes = get_task(spec.task.type).classes(spec.task)
    missing = [c for c in classes if not train.label_counts.get(c)]
    if missing and len(missing) < len(classes):
        print(f"[peft-ray] note: no training row has the label(s) {missing} of task.labels, so the model never "
              "learns them; add such rows, or drop the label(s) if the data cannot have them", file=sys.stderr)
    shots = spec.data.train_shots
    short = {c: n for c, n in train.label_counts.items() if shots and n < shots}
    if short:
        held = ", ".join(f"'{c}' {n}" for c, n in short.items())
        print(f"[peft-ray] note: data.train_shots is {shots} but some classes have fewer usable rows ({held}); "
              "those train on all they have, so the run is not the K-shot one asked for", file=sys.stderr)


def note_shared_files(train: List[str], validation: List[str]) -> None:
    """A glob such as `data.train: '*.parquet'` also picks up validation.parquet: the model is then
    scored on rows it trained on, and nothing said so. A note, not an error: evaluating on the
    training file can be meant (a sanity check)."""
    import os
    import sys

    shared = sorted({os.path.realpath(f) for f in train} & {os.path.realpath(f) for f in validation})
    if shared:
        print(f"[peft-ray] note: data.train and data.validation both read {', '.join(shared[:3])}"
              f"{' ...' if len(shared) > 3 else ''}: evaluation scores rows the model trains on. Narrow "
              "data.train's pattern, or hold rows out (data.validation: null, data.validation_fraction)",
              file=sys.stderr)
