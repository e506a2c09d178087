"""The data-iterator seam. The recipe only sees ``train_tables(epoch)`` and
``eval_tables()``, iterables of preprocessed Arrow tables; Ray mode and
--local mode differ only here.

Semantics: the train shard is this worker's disjoint part, of equal size on
every worker: Ray Data's streaming_split for a large split, and for a small one
(tokenized in the driver, handed to Ray Data as in-memory blocks) the worker's own
contiguous share of the whole split, which every worker reads in the same seeded
order (no split coordinator to start: see rank_share). The eval iterable is the
whole validation set on every worker, and the evaluator shards it by micro-batch
index so that every validation row is scored exactly once.
"""

from __future__ import annotations

import itertools
from typing import Iterable, List, Optional

import pyarrow as pa

from peft_ray import dist as D

READ_BATCH = 256
IN_MEMORY_ROWS = 200_000   # a train shard up to this many rows is held in memory (a few hundred MB of ids at most)


class InMemoryShard(list):
    """A worker's whole train shard as tables, held on every epoch by construction (not by a cache
    that a resumed run would lack), so the recipe may permute it whole each epoch and a resumed run
    permutes it the same way. Past IN_MEMORY_ROWS rows the tables are memory-mapped from a
    temporary file (data/shard_file.spill), read as the permutation reaches them."""


class RayDataIterators:
    def __init__(self, split_here: bool = False):
        """`split_here`: the train dataset reaches every worker whole (driver.make_trainer) and
        each worker takes rank_share of it."""
        import ray.data
        import ray.train

        ray.data.DataContext.get_current().enable_progress_bars = False  # rank-0 log lines instead
        self._train = ray.train.get_dataset_shard("train")
        try:
            self._val = ray.train.get_dataset_shard("validation")
        except (KeyError, ValueError):
            self._val = None
        self._train_cache: Optional[List[pa.Table]] = None
        self._val_cache: Optional[List[pa.Table]] = None
        self._split_here = split_here

    def train_tables(self, epoch: int) -> Iterable[pa.Table]:
        # Later epochs replay the first one's tokenized tables instead of running the Ray Data
        # pipeline again: the shard is the same rows in the same order every epoch (a seeded
        # shuffle, preserve_order). It is held whole, an InMemoryShard (memory-mapped past
        # IN_MEMORY_ROWS), which the recipe permutes whole each epoch (a resumed run reads it
        # whole the same way).
        if self._train_cache is None:
            batches = self._train.iter_batches(batch_size=READ_BATCH, batch_format="pyarrow", prefetch_batches=2)
            self._train_cache = (InMemoryShard(rank_share(list(batches), D.rank(), D.world())) if self._split_here
                                 else held_whole(batches, IN_MEMORY_ROWS))
        return self._train_cache

    def eval_tables(self) -> Optional[Iterable[pa.Table]]:
        if self._val is None:
            return None
        if self._val_cache is None:
            return _CachingIterable(self._val.iter_batches(
                batch_size=READ_BATCH, batch_format="pyarrow", prefetch_batches=2), self._keep_val)
        return self._val_cache

    def _keep_val(self, tables: List[pa.Table]) -> None:
        self._val_cache = tables


def rank_share(tables: List[pa.Table], rank: int, world: int) -> List[pa.Table]:
    """Rank `rank`'s part of a split that every rank read whole, in the same order: the
    contiguous `rank`-th of `world` equal parts, the last len % world rows dropped, as
    streaming_split(equal=True) drops them (the driver's step count assumes so).

    Why not streaming_split for small splits: its coordinator is one more actor process,
    started (Ray Data imported) while the workers wait for their first batch, about 2 s of a
    2-core job; a split this small costs each worker nothing to read whole."""
    if not tables or world <= 1:
        return tables
    rows = pa.concat_tables(tables)
    per = rows.num_rows // world
    mine = rows.slice(rank * per, per)
    return [mine.slice(i, READ_BATCH) for i in range(0, per, READ_BATCH)] or [mine]


class _CachingIterable:
    """Streams once and, when the stream was read to its end and held at most MAX_ROWS rows
    (a few hundred MB of token ids at most), hands its tables to `keep`: later passes
    (evaluations, epochs) cost no Ray Data execution. A pass stopped early keeps nothing."""

    MAX_ROWS = IN_MEMORY_ROWS

    def __init__(self, it, keep):
        self.it, self.keep = it, keep

    def __iter__(self):
        tables, rows = [], 0
        for t in self.it:
            rows += len(t)
            if tables is not None and rows <= self.MAX_ROWS:
                tables.append(t)
            else:
                tables = None
            yield t
        if tables is not None:
            self.keep(tables)


class LocalDataIterators:
    """pyarrow reading + in-process preprocessing (no Ray). Rows are sharded by index."""

    def __init__(self, train_files: List[str], val_files: Optional[List[str]], pp_cfg, columns,
                 rank: int = 0, world: int = 1, preprocess=None, val_cfg=None):
        self.train_files, self.val_files = train_files, val_files
        self.preprocess, self.val_cfg = preprocess, val_cfg or pp_cfg
        self.pp_cfg, self.columns, self.rank, self.world = pp_cfg, columns, rank, world
        self._train_cache: Optional[InMemoryShard] = None

    def _tables(self, files, shard: bool, cfg) -> Iterable[pa.Table]:
        from peft_ray.data.sources import iter_arrow

        offset = 0
        for batch in iter_arrow(files, self.columns, READ_BATCH):
            table = pa.Table.from_batches([batch])
            if shard and self.world > 1:
                idx = [i for i in range(len(table)) if (offset + i) % self.world == self.rank]
                table = table.take(idx)
            offset += len(batch)
            yield self.preprocess(table, cfg)

    def train_tables(self, epoch: int) -> Iterable[pa.Table]:
        """The shard whole (InMemoryShard, tokenized once for every epoch; memory-mapped past
        IN_MEMORY_ROWS), so that every epoch visits it in a fresh random order whatever order the
        file holds (a label-sorted file streamed in file order trained on one class at a time).
        One process reads and trains in turn, so reading it first costs only the first step's wait."""
        if self._train_cache is None:
            self._train_cache = held_whole(self._tables(self.train_files, shard=True, cfg=self.pp_cfg),
                                           IN_MEMORY_ROWS)
        return self._train_cache

    def eval_tables(self) -> Optional[Iterable[pa.Table]]:
        return self._tables(self.val_files, shard=False, cfg=self.val_cfg) if self.val_files else None


def held_whole(tables: Iterable[pa.Table], max_rows: int) -> InMemoryShard:
    """All of `tables` as an InMemoryShard: in memory if they hold at most `max_rows` rows, else
    written to a temporary file and memory-mapped (data/shard_file.spill), so memory stays flat."""
    from peft_ray.data.shard_file import spill

    it = iter(tables)
    held, rows = [], 0
    for t in it:
        held.append(t)
        rows += len(t)
        if rows > max_rows:
            return InMemoryShard([spill(itertools.chain(held, it), rows)])
    return InMemoryShard(held)
