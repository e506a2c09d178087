"""Length grouping: large sets get length-sorted groups, few-shot sets freshly mixed batches."""

from __future__ import annotations

import pyarrow as pa

from peft_ray.data.batching import WINDOW_BATCHES, group_batches, micro_batches


def table(n: int) -> pa.Table:
    # Row i has length 1 + i % 13 and id i: lengths repeat, so groups and mixes both show.
    return pa.table({"input_ids": [[i] * (1 + i % 13) for i in range(n)], "label": [i % 2 for i in range(n)]})


def epoch(n: int, batch: int, seed: int, group: int):
    out = []
    for b in micro_batches([table(n)], batch, pad_id=-1, seed=seed, group_by_length=True, drop_last=True,
                           group=group):
        ids = b["input_ids"]
        out.append(frozenset(int(r[0]) for r in ids))
    return out


def test_hf_rule_for_the_group_size():
    assert group_batches(32, 8) == 1                  # 16-shot x 2 classes at batch 8
    assert group_batches(6920, 16) == WINDOW_BATCHES  # full SST-2: capped at the shuffle window
    assert group_batches(256, 4) == 16


def test_few_shot_batches_differ_between_epochs_and_cover_every_row():
    n, batch = 32, 8
    g = group_batches(n, batch)
    a, b = epoch(n, batch, seed=1, group=g), epoch(n, batch, seed=2, group=g)
    assert set().union(*a) == set(range(n)) == set().union(*b)
    assert set(a) != set(b), "a small set must not be cut into the same length buckets every epoch"


def test_a_group_of_the_whole_window_sorts_rows_by_length():
    n, batch = 32, 8
    spread = lambda batches: sum(max(i % 13 for i in s) - min(i % 13 for i in s) for s in batches)  # noqa: E731
    assert spread(epoch(n, batch, seed=1, group=WINDOW_BATCHES)) < spread(epoch(n, batch, seed=1, group=1))


def test_large_sets_are_still_grouped_by_length():
    n, batch = 4096, 8
    padded = 0
    for b in micro_batches([table(n)], batch, pad_id=-1, seed=0, group_by_length=True, drop_last=True,
                           group=group_batches(n, batch)):
        padded += int((b["input_ids"] == -1).sum())
    mixed = sum(int((b["input_ids"] == -1).sum())
                for b in micro_batches([table(n)], batch, pad_id=-1, seed=0, group_by_length=False, drop_last=True))
    assert padded < mixed / 4


def test_ranks_with_one_order_seed_step_with_matching_lengths():
    """Data-parallel ranks step in lockstep, so a step costs the longer of their batches. With a
    shared order seed each rank's k-th batch is the same length quantile of its own rows; the row
    shuffles stay per rank, and a single process (order_seed None) stays deterministic."""
    import numpy as np

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=2 * 2048)
    shards = [pa.table({"input_ids": [[int(i)] * int(lengths[i]) for i in range(r, len(lengths), 2)]})
              for r in range(2)]

    def widths(rank, order_seed):
        return np.array([b["input_ids"].shape[1] for b in micro_batches(
            [shards[rank]], 16, pad_id=0, seed=10 + rank, group_by_length=True, drop_last=True,
            order_seed=order_seed)])

    free = np.maximum(widths(0, None), widths(1, None)).mean()
    a, b = widths(0, 10), widths(1, 10)
    assert len(a) == len(b) == 128
    mean = (a.mean() + b.mean()) / 2
    assert np.maximum(a, b).mean() < 1.05 * mean < free, (np.maximum(a, b).mean(), mean, free)
    single = [b["input_ids"].tolist() for b in micro_batches([shards[0]], 16, pad_id=0, seed=3,
                                                              group_by_length=True, drop_last=True)]
    again = [b["input_ids"].tolist() for b in micro_batches([shards[0]], 16, pad_id=0, seed=3,
                                                             group_by_length=True, drop_last=True)]
    assert single == again


def test_without_length_grouping_batches_are_still_shuffled():
    """group_by_length: false once shuffled inside each batch only, so every epoch and every seed
    gave the same consecutive rows in file order."""
    n, batch = 256, 8

    def sets(seed):
        return [frozenset(int(r[0]) for r in b["input_ids"]) for b in micro_batches(
            [table(n)], batch, pad_id=-1, seed=seed, group_by_length=False, drop_last=True)]

    a, b = sets(1), sets(2)
    assert set().union(*a) == set(range(n))
    assert set(a) != set(b)
    assert frozenset(range(batch)) not in a            # not file order cut into batches


def test_an_in_memory_shard_is_permuted_whole_each_epoch():
    from peft_ray.data.batching import permuted

    tables = [table(300).slice(0, 100), table(300).slice(100, 200)]
    ids = lambda ts: [r[0] for t in ts for r in t.column("input_ids").to_pylist()]  # noqa: E731
    one, two = ids(permuted(tables, (0, 0, 0))), ids(permuted(tables, (0, 1, 0)))
    assert sorted(one) == sorted(two) == list(range(300))
    assert one != two and one == ids(permuted(tables, (0, 0, 0)))
    assert max(one[:100]) >= 200                       # rows cross the tables' bounds


def test_a_small_shard_is_held_in_memory_and_a_large_one_memory_mapped():
    from peft_ray.train.data_iter import InMemoryShard, held_whole

    parts = [table(10) for _ in range(3)]
    held = held_whole(iter(parts), 30)
    assert isinstance(held, InMemoryShard) and held == parts                 # the tables themselves
    mapped = held_whole(iter(parts), 25)
    assert isinstance(mapped, InMemoryShard) and len(mapped) == 1 and mapped[0].num_rows == 30
    assert mapped[0].to_pylist() == pa.concat_tables(parts).to_pylist()


def _steps(n: int, micro: int, ga: int, grouped: bool):
    batches = [frozenset(int(r[0]) for r in b["input_ids"]) for b in micro_batches(
        [table(n)], micro, pad_id=-1, seed=5, group_by_length=grouped, drop_last=True,
        group=group_batches(n, 32), per_step=ga)]
    assert all(len(b) == micro for b in batches)
    return [frozenset().union(*batches[i:i + ga]) for i in range(0, len(batches), ga)]


def test_a_step_sees_the_same_rows_whatever_the_gradient_accumulation():
    """HF Trainer: 32 x 1 and 16 x 2 (or 8 x 4) see the same rows in every optimizer step; each
    micro-batch is a consecutive slice of the step's. A short last step stays last, where the
    trainer's consecutive cut into steps puts it."""
    for grouped in (True, False):
        n = 32 * WINDOW_BATCHES + 32 * 5                 # a full window of steps, then a partial one
        assert _steps(n, 32, 1, grouped) == _steps(n, 16, 2, grouped) == _steps(n, 8, 4, grouped), grouped
        n += 16                                          # and a short step of 16 rows (32 x 1 drops it)
        two, four = _steps(n, 16, 2, grouped), _steps(n, 8, 4, grouped)
        assert two == four and len(two[-1]) == 16 and all(len(s) == 32 for s in two[:-1]), grouped


def test_full_steps_do_not_depend_on_how_the_last_rows_divide_into_micro_batches():
    """A new-user review: batch 30 as 30 x 1 and as 10 x 3 saw other rows from the first step,
    because the epoch's last window lost its ragged micro-batch before the shuffle. Now 20 rows
    short of a step change only the short last step: 32 x 1 drops them, 16 x 2 and 8 x 4 keep 16."""
    for grouped in (True, False):
        n = 32 * WINDOW_BATCHES + 32 * 5 + 20
        one, two, four = _steps(n, 32, 1, grouped), _steps(n, 16, 2, grouped), _steps(n, 8, 4, grouped)
        assert len(one) == WINDOW_BATCHES + 5 and one == two[:-1] == four[:-1], grouped
        assert two[-1] == four[-1] and len(two[-1]) == 16, grouped
