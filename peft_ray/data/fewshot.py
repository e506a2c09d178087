"""Few-shot training sets (`data.train_shots: K`): K rows per class from the training files.

As in LM-BFF and OpenPrompt, a seed picks the K examples of each class. The pick must be
the same on every worker and whatever order Ray Data reads blocks in, so it is a function
of content: each usable row gets a keyed 64-bit hash, and a class keeps its K smallest.
One streaming pass (here, before training) finds each class's K-th smallest hash; after
that the filter is row-local (`hash <= threshold[label]`) and runs inside preprocessing
like the hold-out. Exact duplicate rows share a hash, so a class may keep a duplicate of
its K-th row.
"""

from __future__ import annotations

import functools
import heapq
from typing import List, Tuple

import numpy as np
import pyarrow as pa

from peft_ray.data.holdout import apply_holdout, row_hash
from peft_ray.data.sources import iter_arrow
from peft_ray.errors import DataError
from peft_ray.rows.labels import has_value, label_ids


def _key(values: tuple, seed: int) -> int:
    return row_hash(values, f"shots-{seed}")


def _usable(values: tuple) -> bool:
    return all(has_value(v) for v in values)


def row_keys(table: pa.Table, columns: Tuple[str, ...]) -> List[tuple]:
    return list(zip(*[table.column(c).to_pylist() for c in columns]))


@functools.lru_cache(maxsize=16)
def shot_thresholds(files: Tuple[str, ...], columns: Tuple[str, ...], label_column: str,
                    labels: Tuple[str, ...], k: int, seed: int, holdout: Tuple[float, int]) -> Tuple[int, ...]:
    """Per label (in task.labels order): the largest hash a kept row may have."""
    smallest: List[list] = [[] for _ in labels]       # max-heaps (negated) of the K smallest hashes
    li = columns.index(label_column)
    for batch in iter_arrow(list(files), list(columns)):
        table = apply_holdout(pa.Table.from_batches([batch]), list(columns), holdout[0], holdout[1],
                              "train" if holdout[0] > 0 else "")
        rows = [r for r in row_keys(table, columns) if _usable(r)]
        if not rows:
            continue
        for r, y in zip(rows, label_ids([r[li] for r in rows], labels, label_column)):
            heap, h = smallest[int(y)], _key(r, seed)
            if len(heap) < k:
                heapq.heappush(heap, -h)
            elif h < -heap[0]:
                heapq.heapreplace(heap, -h)
    empty = [lab for lab, heap in zip(labels, smallest) if not heap]
    if empty:
        raise DataError(f"data.train_shots: no usable training row has label {empty}; few-shot training needs "
                        "examples of every class in task.labels")
    return tuple(-heap[0] for heap in smallest)  # heap[0] is minus the largest hash kept


def keep_shots(table: pa.Table, columns: Tuple[str, ...], label_column: str, labels: Tuple[str, ...],
               thresholds: Tuple[int, ...], seed: int) -> pa.Table:
    """The rows of `table` that belong to the few-shot set."""
    if not thresholds or len(table) == 0:
        return table
    li = columns.index(label_column)
    keep = np.zeros(len(table), dtype=bool)
    for i, r in enumerate(row_keys(table, columns)):
        if _usable(r):
            y = int(label_ids([r[li]], labels, label_column)[0])
            keep[i] = _key(r, seed) <= thresholds[y]
    return table.filter(pa.array(keep))
