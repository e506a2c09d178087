"""A Ray Data datasource for Arrow IPC / Feather v2 files (Ray has no built-in reader)."""

from __future__ import annotations

from typing import Iterator, List, Optional

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

from peft_ray.data.columns import check_plain_columns


class ArrowIPCDatasource(FileBasedDatasource):
    _FILE_EXTENSIONS = ["arrow", "feather", "ipc"]

    def __init__(self, paths, columns: Optional[List[str]] = None, **kwargs):
        super().__init__(paths, **kwargs)
        self.columns = columns            # only these are read on (None: all)

    def _read_stream(self, f: "pa.NativeFile", path: str) -> Iterator[pa.Table]:
        data = f.read()  # Ray hands us a stream; IPC's file format needs random access
        reader = pa.ipc.open_file(pa.BufferReader(data))
        columns = getattr(self, "columns", None)
        check_plain_columns(reader.schema, path, columns)   # before any value is read: see check_plain_columns
        for i in range(reader.num_record_batches):
            table = pa.Table.from_batches([reader.get_batch(i)])
            yield table.select(columns) if columns is not None else table
