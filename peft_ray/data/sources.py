"""Where data lives and how it is read: file resolution, format by extension,
Ray Data readers (streaming) and a pyarrow reader (pre-flight checks, --local)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator, List, Optional

import pyarrow as pa

from peft_ray.errors import DataError

FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
           ".csv": "csv", ".jsonl": "json", ".json": "json"}
BUILTIN_PREFIX = "builtin:"


def cache_dir() -> Path:
    return Path(os.environ.get("PEFT_RAY_CACHE", Path.home() / ".cache" / "peft_ray"))


def resolve_root(root: Optional[str]) -> Optional[Path]:
    """`builtin:NAME` materializes the project's own data set in the cache."""
    if root is None:
        return None
    if root.startswith(BUILTIN_PREFIX):
        from peft_ray.data import builtin

        name = root[len(BUILTIN_PREFIX):]
        if name not in builtin.datasets():
            raise DataError(f"data.root: unknown built-in data set '{name}'; available: "
                            f"{', '.join('builtin:' + n for n in builtin.datasets())}")
        version = builtin.datasets()[name].VERSION
        return builtin.materialize(cache_dir() / "datasets" / f"{name}-v{version}", name=name)
    return Path(root).expanduser()


def resolve_files(root: Optional[str], name: str, field: str) -> List[str]:
    """The files one split names (a file, a folder or a glob), checked to exist and be readable."""
    base = resolve_root(root)
    pattern = str(base / name) if base is not None else name
    if os.path.isdir(pattern):
        files = sorted(str(p) for p in Path(pattern).iterdir() if p.suffix in FORMATS)
    else:
        files = sorted(glob.glob(pattern))
    if not files:
        hint = f" under data.root '{root}'" if root else " (set data.root to the data folder)"
        raise DataError(f"{field}: no file matches '{name}'{hint}")
    for f in files:
        file_format(f, field)
    return files


def file_format(path: str, field: str = "data") -> str:
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise DataError(f"{field}: '{path}' has extension '{ext}'; supported: {', '.join(sorted(FORMATS))}")
    return FORMATS[ext]


def iter_arrow(files: List[str], columns: Optional[List[str]] = None,
               batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
    """Stream record batches with pyarrow (memory stays flat whatever the file size)."""
    import pyarrow.dataset as pds

    for f in files:
        fmt = file_format(f)
        if fmt in ("csv", "json"):
            check_utf8(f)
        try:
            if fmt == "json":
                import pyarrow.json as pj

                table = pj.read_json(f)
                yield from table.select(columns or table.column_names).to_batches(batch_size)
                continue
            ds = pds.dataset(f, format={"arrow": "ipc"}.get(fmt, fmt))
            yield from ds.to_batches(columns=columns, batch_size=batch_size)
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as e:
            raise DataError(f"{f}: cannot read as {fmt}: {str(e).splitlines()[0]}. "
                            "Check the file is complete and (for CSV/JSON) UTF-8 encoded") from None


def check_utf8(path: str) -> None:
    """Text formats must be UTF-8; say which line is not (pyarrow may read it silently)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                line += chunk[:e.start].count(b"\n")
                raise DataError(f"{path}: line {line} is not UTF-8 text ({e.reason}); re-save the file "
                                "as UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None
            line += chunk.count(b"\n")


def read_schema(files: List[str]) -> pa.Schema:
    for batch in iter_arrow(files[:1], batch_size=16):
        return batch.schema
    raise DataError(f"{files[0]}: the file is empty (no rows); point data.* at a file with data")


def ray_dataset(files: List[str]):
    """A lazy Ray Data dataset over the files; nothing is read until it is iterated."""
    import ray.data

    fmt = file_format(files[0])
    if fmt == "parquet":
        return ray.data.read_parquet(files)
    if fmt == "csv":
        return ray.data.read_csv(files)
    if fmt == "json":
        return ray.data.read_json(files, lines=True)
    from peft_ray.data.arrow_ipc import ArrowIPCDatasource

    return ray.data.read_datasource(ArrowIPCDatasource(files))
