"""The data-iterator seam. The recipe only sees ``train_tables(epoch)`` and
``eval_tables()``, iterables of preprocessed Arrow tables; Ray mode and
--local mode differ only here.

Semantics: the train shard is this worker's disjoint part (Ray Data
streaming_split, equal sizes); the eval iterable is the whole validation set on
every worker, and the evaluator shards it by micro-batch index so that every
validation row is scored exactly once.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

import pyarrow as pa

READ_BATCH = 256


class RayDataIterators:
    def __init__(self):
        import ray.train

        self._train = ray.train.get_dataset_shard("train")
        try:
            self._val = ray.train.get_dataset_shard("validation")
        except (KeyError, ValueError):
            self._val = None

    def train_tables(self, epoch: int) -> Iterable[pa.Table]:
        return self._train.iter_batches(batch_size=READ_BATCH, batch_format="pyarrow", prefetch_batches=2)

    def eval_tables(self) -> Optional[Iterable[pa.Table]]:
        if self._val is None:
            return None
        return self._val.iter_batches(batch_size=READ_BATCH, batch_format="pyarrow", prefetch_batches=2)


class LocalDataIterators:
    """pyarrow reading + in-process preprocessing (no Ray). Rows are sharded by index."""

    def __init__(self, train_files: List[str], val_files: Optional[List[str]], pp_cfg, columns,
                 rank: int = 0, world: int = 1):
        self.train_files, self.val_files = train_files, val_files
        self.pp_cfg, self.columns, self.rank, self.world = pp_cfg, columns, rank, world

    def _tables(self, files, shard: bool) -> Iterable[pa.Table]:
        from peft_ray.data.preprocess import preprocess_batch
        from peft_ray.data.sources import iter_arrow

        offset = 0
        for batch in iter_arrow(files, self.columns, READ_BATCH):
            table = pa.Table.from_batches([batch])
            if shard and self.world > 1:
                idx = [i for i in range(len(table)) if (offset + i) % self.world == self.rank]
                table = table.take(idx)
            offset += len(batch)
            yield preprocess_batch(table, self.pp_cfg)

    def train_tables(self, epoch: int) -> Iterable[pa.Table]:
        return self._tables(self.train_files, shard=True)

    def eval_tables(self) -> Optional[Iterable[pa.Table]]:
        return self._tables(self.val_files, shard=False) if self.val_files else None
