"""Label values to label ids: the one rule for rows, preflight counts and few-shot sampling."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from peft_ray.errors import DataError


def label_ids(values: List, labels: Tuple[str, ...], column: str) -> np.ndarray:
    """Labels may be ids (0..K-1) or label names; anything else is an error naming the value. An id
    written as text ("1") counts as the id where it is no label name: a CSV column with one stray
    word in it, or a JSON file that quotes its ids, is read as text, and the error then names the
    stray value rather than every "1"."""
    index = {name: i for i, name in enumerate(labels)}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, str) and v in index:
            out[i] = index[v]
        elif isinstance(v, str) and v.isascii() and v.isdigit() and int(v) < len(labels):
            out[i] = int(v)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < len(labels):
            out[i] = int(v)
        else:
            header = " (the column's own name: a repeated header line, e.g. two CSV files joined?)" * (v == column)
            raise DataError(f"column '{column}': label {v!r} is not in task.labels {list(labels)}{header} "
                            f"(use an id 0..{len(labels) - 1} or a label name)")
    return out
