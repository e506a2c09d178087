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


def test_a_streamed_split_sorted_by_label_reaches_every_rank_mixed(ray_runtime, tiny_bert, tmp_path, monkeypatch):
    """An ML review finding: a split over IN_DRIVER_ROWS streams, and a Parquet file is one Ray
    Data block per row group, so the seeded block order left a label-sorted file in file order:
    rank 0 trained on negatives only, rank 1 on positives, and 929 of 1,875 steps passed before
    the first positive row. The split is now shuffled whole, the same way in every execution."""
    import ray.data

    import peft_ray.train.driver as driver
    from peft_ray.data import builtin
    from peft_ray.preflight import run_preflight
    from peft_ray.spec import validate_spec
    from tests.conftest import job_dict, write_rows

    made = builtin.make_rows(512, seed=3)
    order = sorted(range(512), key=lambda i: made["label"][i])
    rows = {k: [v[i] for i in order] for k, v in made.items()}
    write_rows(tmp_path / "train.parquet", rows)
    write_rows(tmp_path / "validation.parquet", {k: v[:8] for k, v in rows.items()})
    monkeypatch.setattr(driver, "IN_DRIVER_ROWS", 0)
    monkeypatch.setattr(ray.data.DataContext.get_current(), "target_max_block_size", 4096)   # many blocks
    # the largest seed the job allows: Ray seeds block i's shuffle with seed + i (a diff review)
    spec = validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "o", train={"seed": 2**32 - 1}))
    ds = driver.build_datasets(spec, run_preflight(spec))["train"]
    ds.context.execution_options.preserve_order = True     # as Ray Train's DataConfig sets make_trainer's
    assert ds.materialize().num_blocks() > 4
    orders = [[r["label"] for r in ds.take_all()] for _ in range(2)]
    assert orders[0] == orders[1] and sorted(orders[0]) == sorted(rows["label"])
    for part in (orders[0][:64], orders[0][256:320]):      # what each of 2 ranks starts on
        assert 16 < sum(part) < 48


def test_local_warns_once_about_a_split_too_large_to_permute_whichever_epoch_it_starts_in(tmp_path, monkeypatch,
                                                                                         capsys):
    """--local streams a shard over IN_MEMORY_ROWS in file order; it says so once, also when a
    resumed run starts in a later epoch (a diff review: the warning tested epoch == 0)."""
    import pyarrow.parquet as pq

    import peft_ray.train.data_iter as data_iter

    pq.write_table(pa.table({"i": list(range(600))}), tmp_path / "train.parquet")
    monkeypatch.setattr(data_iter, "IN_MEMORY_ROWS", 100)
    it = data_iter.LocalDataIterators([str(tmp_path / "train.parquet")], None, None, ["i"],
                                      preprocess=lambda table, cfg: table)
    for epoch in (3, 4):                                     # resumed in epoch 3
        assert sum(len(t) for t in it.train_tables(epoch)) == 600
    assert capsys.readouterr().out.count("--local streams it in file order") == 1
