"""A train shard too large to hold in memory, kept whole anyway: written once to an Arrow IPC
file and memory-mapped, so an epoch can still visit it in a fresh random order (as HF Trainer's
RandomSampler does at any size) instead of streaming it in file order. The file is unlinked as
soon as it is mapped: the mapping keeps its pages, and nothing is left behind when the process
ends, however it ends.

`RowTaker` reads rows by index without joining the table's chunks first: pyarrow 26's
`Table.take` concatenates every chunk per call (10 ms and 100 MB for 256 rows of a 400,000-row
table), which over a memory-mapped shard would copy the whole file into memory for each batch.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable, List

import numpy as np
import pyarrow as pa

from peft_ray.errors import DataError


def spill(tables: Iterable[pa.Table], rows_hint: int) -> pa.Table:
    """`tables` (one schema) as one memory-mapped table. `rows_hint`: rows known to be coming, for
    the message should the disk refuse the file. Only the file's own errors are said as such; an
    error of the tables' source (a Ray Data task, a read) passes as it is."""
    path = os.path.join(tempfile.gettempdir(), f"peft-ray-shard-{os.getpid()}-*.arrow")

    def refused(e: OSError) -> DataError:
        return DataError(f"the train shard holds over {rows_hint:,} rows, which peft-ray keeps in a temporary "
                         f"file ({path}) so that every epoch visits them in a fresh random order; writing it failed "
                         f"({e.strerror or e}). Free space there, or point TMPDIR at a larger disk")

    try:
        fd, path = tempfile.mkstemp(prefix=f"peft-ray-shard-{os.getpid()}-", suffix=".arrow")
    except OSError as e:
        raise refused(e) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = schema = None
            for t in tables:
                try:
                    if writer is None:
                        schema = t.schema
                        writer = pa.ipc.new_file(fh, schema)
                    writer.write_table(t if t.schema == schema else t.cast(schema))
                except OSError as e:
                    raise refused(e) from None
            if writer is None:
                raise ValueError("spill: no tables")
            try:
                writer.close()
            except OSError as e:
                raise refused(e) from None
        return pa.ipc.open_file(pa.memory_map(path)).read_all()
    finally:
        os.unlink(path)


class RowTaker:
    """Rows of a list of tables by global index, each read from the record batch that holds it."""

    def __init__(self, tables: List[pa.Table]):
        self.batches = [b for t in tables for b in t.to_batches() if len(b)]
        self.starts = np.cumsum([0] + [len(b) for b in self.batches])
        self.n = int(self.starts[-1])

    def take(self, idx: np.ndarray) -> pa.Table:
        which = np.searchsorted(self.starts, idx, side="right") - 1
        order = np.argsort(which, kind="stable")          # rows grouped by their batch
        grouped, local = which[order], idx[order] - self.starts[which[order]]
        cuts = np.flatnonzero(np.diff(grouped)) + 1
        parts = [self.batches[g[0]].take(pa.array(part))
                 for g, part in zip(np.split(grouped, cuts), np.split(local, cuts))]
        gathered = pa.Table.from_batches(parts).combine_chunks()   # len(idx) rows: a small copy
        return gathered.take(pa.array(np.argsort(order)))          # back in idx's order
