"""Label values to label ids: the one rule for rows, preflight counts and few-shot sampling."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from peft_ray.errors import DataError


def has_value(v) -> bool:
    """Whether a label or target cell holds one: not null, and not blank text. A CSV reads an
    empty cell of a text column as "", Parquet stores null: both are a row without supervision,
    which every reader (pre-flight counts, row building, few-shot sampling) skips alike."""
    return (v is not None and not (isinstance(v, str) and not v.strip())
            and not (isinstance(v, (float, np.floating)) and v != v))   # NaN: a float column's missing value


def label_ids(values: List, labels: Tuple[str, ...], column: str, rows: Optional[Sequence[int]] = None) -> np.ndarray:
    """Labels may be ids (0..K-1) or label names; anything else is an error naming the value (and, with
    `rows`, the row numbers of `values`, its row and how many rows are like it). An id written as text
    ("1") counts as the id where it is no label name: a CSV column with one stray word in it, or a
    JSON file that quotes its ids, is read as text, and the error then names the stray value rather
    than every "1". A whole-number float (1.0) is that number: pandas stores a label column with one
    missing value as float64.

    Where a label name is itself a number (star ratings `['1', '2', '3', '4']`), a number in the data
    is read as that name, never as an id, however the file stores it: a CSV reads `1` as an integer,
    and reading it as id 1 (the name '2') shifted every label by one without a word."""
    index = {name: i for i, name in enumerate(labels)}
    numbered = any(_digits(name) for name in labels)
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        got = _label_id(v, index, len(labels), numbered)
        if got is None:
            header = " (the column's own name: a repeated header line, e.g. two CSV files joined?)" * (v == column)
            where = ""
            if rows is not None:
                bad = sum(_label_id(w, index, len(labels), numbered) is None for w in values[i:])
                where = f" in row {rows[i]} (0-based)" + (f", and {bad - 1} more row{'s' * (bad > 2)} with a label not in "
                                                f"task.labels among the rows read with it" if bad > 1 else "")
            how = ("task.labels are numbers written as names, so numbers in the data are read as those names, "
                   "never as ids" if numbered else f"use an id 0..{len(labels) - 1} or a label name")
            near = [name for name in labels if isinstance(v, str) and name.strip().lower() == v.strip().lower()]
            if near:   # `Positive` for `positive`: names match exactly
                how = f"did you mean '{near[0]}'? names match exactly, case and spaces included"
            raise DataError(f"column '{column}': label {v!r} is not in task.labels {list(labels)}{header} "
                            f"({how}){where}")
        out[i] = got
    return out


def label_kind(v, labels: Tuple[str, ...]) -> Optional[str]:
    """How `v` names its label: "name" (one of `labels`, or any number where the names are
    numbers), "id" (a position in `labels`), None where it names none (label_ids says why)."""
    index = {name: i for i, name in enumerate(labels)}
    numbered = any(_digits(name) for name in labels)
    if _label_id(v, index, len(labels), numbered) is None:
        return None
    return "name" if numbered or (isinstance(v, str) and v in index) else "id"


def _digits(v) -> bool:
    return isinstance(v, str) and v.isascii() and v.isdigit()


def _label_id(v, index: dict, k: int, numbered: bool) -> Optional[int]:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        if numbered:                       # a number is a name here: 1 and "1" alike
            return index.get(str(int(v)))
        return int(v) if 0 <= v < k else None
    if isinstance(v, str) and v in index:
        return index[v]
    if _digits(v) and not numbered and int(v) < k:
        return int(v)
    return None
