"""A deterministic validation hold-out from the training files (`data.validation_fraction`).

A row's split is a function of its content (a keyed hash of the columns the task
reads), not of its position: Ray Data may read blocks in any order, and an exact
duplicate can never sit on both sides of the split.
"""

from __future__ import annotations

import hashlib
from typing import List

import numpy as np
import pyarrow as pa

BUCKETS = 10_000


def row_hash(values: tuple, key: str) -> int:
    """A row's 64-bit keyed content hash: the same on every worker and run, whatever the file order
    (the hold-out keys it with the seed, the few-shot pick with "shots-" + seed)."""
    h = hashlib.blake2b(repr(values).encode(), digest_size=8, key=key.encode())
    return int.from_bytes(h.digest(), "little")


def _bucket(values: tuple, seed: int) -> int:
    return row_hash(values, str(seed)) % BUCKETS


def holdout_mask(table: pa.Table, columns: List[str], fraction: float, seed: int) -> np.ndarray:
    """True for the rows in the held-out (validation) part."""
    cols = [table.column(c).to_pylist() for c in columns if c in table.column_names]
    cut = int(round(fraction * BUCKETS))
    return np.array([_bucket(vals, seed) < cut for vals in zip(*cols)], dtype=bool)


def apply_holdout(table: pa.Table, columns: List[str], fraction: float, seed: int, side: str) -> pa.Table:
    """side: "" (no hold-out), "train" (drop held-out rows) or "validation" (keep only them)."""
    if not side or fraction <= 0 or len(table) == 0:
        return table
    mask = holdout_mask(table, columns, fraction, seed)
    return table.filter(pa.array(mask if side == "validation" else ~mask))
