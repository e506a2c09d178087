"""The files `peft-ray predict` writes its rows to, by suffix: Parquet, JSON Lines, CSV. Each
writer appends to a hidden sibling that becomes the file only when every row is in."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pyarrow as pa

from peft_ray.errors import DataError

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}


@contextlib.contextmanager
def open_sink(path: Path):
    """write(table) appends to a hidden sibling that becomes `path` only when every row is in."""
    from peft_ray.storage import exclusive_temp

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = exclusive_temp(path, ".partial")            # random name, O_EXCL|O_NOFOLLOW: no planted link
    sink = {"parquet": ParquetSink, "jsonl": JsonLinesSink, "csv": CsvSink}[FORMATS[path.suffix.lower()]](tmp)
    try:
        yield sink.write
        sink.close()
        tmp.replace(path)
    except BaseException:
        sink.close()
        tmp.unlink(missing_ok=True)
        raise


class ParquetSink:
    def __init__(self, path: Path):
        self.path, self.writer = path, None

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(str(self.path), table.schema)
        elif table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)   # e.g. a column inferred as null in one JSON block
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class JsonLinesSink:
    def __init__(self, path: Path):
        self.file = open(path, "w", encoding="utf-8")

    def write(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            self.file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        self.file.close()


class CsvSink:
    """A spreadsheet's view of the rows: a struct column becomes one column per field
    (`scores.positive`), a list, map or binary value one JSON text cell, and every cell text, so
    a column whose type differs between input files (int in one shard, float in another) writes
    as it reads."""

    def __init__(self, path: Path):
        self.path, self.writer, self.names = path, None, None

    def write(self, table: pa.Table) -> None:
        import pyarrow.csv as pcsv

        table = flat_for_csv(table)
        if self.writer is None:
            self.writer, self.names = pcsv.CSVWriter(str(self.path), table.schema), table.column_names
        elif table.column_names != self.names:
            raise DataError(f"--output: the input files' columns differ "
                            f"({self.names} then {table.column_names}); a CSV has one header. "
                            "Predict each file on its own, or write .jsonl")
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def flat_for_csv(table: pa.Table) -> pa.Table:
    """Structs flattened (`scores.positive`; the prediction's columns win over an input column of
    the same name, as in the other formats), every other value as text: strings as they are,
    numbers and times as Arrow prints them, nested and binary values as JSON text."""
    from peft_ray.data.columns import decoded

    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    names = table.column_names
    keep = [i for i, n in enumerate(names) if n not in names[i + 1:]]   # the last of a repeated name
    cols = []
    for i in keep:
        col = decoded(table.column(i))
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            cols.append(col.cast(pa.string()))
            continue
        try:
            if not _plain_scalar(col.type):
                raise pa.ArrowNotImplementedError("nested")
            cols.append(col.cast(pa.string()))
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            binary = pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) or \
                pa.types.is_fixed_size_binary(col.type)
            text = _jsonable if binary else (lambda v: json.dumps(_jsonable(v), ensure_ascii=False, default=str))
            cols.append(pa.array([None if v is None else text(v) for v in col.to_pylist()], type=pa.string()))
    return pa.table(cols, names=[names[i] for i in keep])


def _plain_scalar(t) -> bool:
    return (pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
            or pa.types.is_temporal(t) or pa.types.is_null(t))


def _jsonable(v):
    """bytes as text where they are UTF-8, else as hex; lists and dicts through."""
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(v).hex()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v
