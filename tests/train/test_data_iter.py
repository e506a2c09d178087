"""A worker's share of a small train split that every worker reads whole (train/data_iter.py)."""

from __future__ import annotations

import pyarrow as pa
import pytest

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


def test_a_shard_too_large_for_memory_is_still_permuted_whole_each_epoch(tmp_path, monkeypatch, capsys):
    """--local streamed a shard over IN_MEMORY_ROWS in file order (shuffled only within 32-step
    windows: a label-sorted file trained on one class at a time), with a warning; Ray re-ran the
    pipeline every epoch in one order. Such a shard is now memory-mapped from a temporary file,
    unlinked at once, and every epoch (a resumed one too) permutes it whole, as one in memory."""
    import glob
    import tempfile

    import numpy as np
    import pyarrow.parquet as pq

    import peft_ray.train.data_iter as data_iter
    from peft_ray.data.batching import permuted

    pq.write_table(pa.table({"i": list(range(600)), "label": [0] * 300 + [1] * 300}), tmp_path / "train.parquet")
    monkeypatch.setattr(data_iter, "IN_MEMORY_ROWS", 100)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    it = data_iter.LocalDataIterators([str(tmp_path / "train.parquet")], None, None, ["i", "label"],
                                      preprocess=lambda table, cfg: table)
    shard = it.train_tables(3)                                       # resumed in epoch 3
    assert isinstance(shard, data_iter.InMemoryShard) and it.train_tables(4) is shard
    assert not glob.glob(str(tmp_path / "tmp" / "*"))               # mapped, and already unlinked
    epochs = [pa.concat_tables(list(permuted(shard, (0, e, 0)))) for e in (3, 4)]
    for e in epochs:
        assert sorted(e["i"].to_pylist()) == list(range(600))
        assert 100 < sum(e["label"].to_pylist()[:300]) < 200           # both classes from the start
    assert epochs[0]["i"].to_pylist() != epochs[1]["i"].to_pylist()
    # the same order as the whole shard in memory gets
    whole = pa.concat_tables(list(permuted([pq.read_table(tmp_path / "train.parquet")], (0, 3, 0))))
    assert whole["i"].to_pylist() == epochs[0]["i"].to_pylist()
    assert "file order" not in capsys.readouterr().out
    assert np.array_equal(np.sort(epochs[1]["i"].to_numpy()), np.arange(600))


def test_a_shard_the_disk_refuses_is_named_with_what_to_do(tmp_path, monkeypatch):
    import tempfile

    import peft_ray.train.data_iter as data_iter
    from peft_ray.errors import DataError

    monkeypatch.setattr(data_iter, "IN_MEMORY_ROWS", 10)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "not-there"))
    tables = [pa.table({"i": list(range(8))}) for _ in range(3)]
    with pytest.raises(DataError, match="over 16 rows.*temporary file.*point TMPDIR at a larger disk"):
        data_iter.held_whole(iter(tables), 10)


def test_an_error_of_the_shards_source_is_not_called_a_full_disk(tmp_path, monkeypatch):
    """A diff review: the spill's `except OSError` also caught the input's own errors (a Ray Data
    task's ConnectionResetError), which then read as "writing it failed ... Free space"."""
    import tempfile

    import peft_ray.train.data_iter as data_iter

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def source():
        yield pa.table({"i": list(range(30))})
        raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(ConnectionResetError):
        data_iter.held_whole(source(), 25)
    assert not list(tmp_path.iterdir())                       # and no file is left
