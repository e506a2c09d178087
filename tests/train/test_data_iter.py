"""A worker's share of a small train split that every worker reads whole (train/data_iter.py)."""

from __future__ import annotations

import pyarrow as pa

from peft_ray.train.data_iter import READ_BATCH, rank_share


def test_rank_share_is_equal_disjoint_and_drops_the_remainder_as_ray_does():
    tables = [pa.table({"i": list(range(k, k + n))}) for k, n in ((0, 300), (300, 7), (307, 400))]  # 707 rows
    parts = [[v for t in rank_share(tables, r, 3) for v in t.column("i").to_pylist()] for r in range(3)]
    assert [len(p) for p in parts] == [235, 235, 235]          # 707 // 3; the last 2 rows dropped
    assert parts[0] + parts[1] + parts[2] == list(range(705))
    assert all(len(t) <= READ_BATCH for r in range(3) for t in rank_share(tables, r, 3))
    assert rank_share(tables, 0, 1) == tables


def test_rank_share_of_fewer_rows_than_ranks_is_empty_everywhere():
    tables = [pa.table({"i": [1]})]
    assert [t.num_rows for r in range(2) for t in rank_share(tables, r, 2)] == [0, 0]
    assert rank_share([], 1, 2) == []
