"""Where data lives and how it is read: file resolution, format by extension,
Ray Data readers (streaming) and a pyarrow reader (pre-flight checks, --local)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator, List, Optional

import pyarrow as pa

from peft_ray.data.columns import check_plain_columns
from peft_ray.errors import DataError
from peft_ray.storage import cache_dir

FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
           ".csv": "csv", ".jsonl": "json", ".json": "json"}
BUILTIN_PREFIX = "builtin:"


def resolve_root(root: Optional[str], field: str = "data.root") -> Optional[Path]:
    """`builtin:NAME` materializes the project's own data set in the cache."""
    if root is None:
        return None
    if root.startswith(BUILTIN_PREFIX):
        from peft_ray.data import builtin

        name = root[len(BUILTIN_PREFIX):]
        if name not in builtin.datasets():
            raise DataError(f"{field}: unknown built-in data set '{name}'; available: "
                            f"{', '.join('builtin:' + n for n in builtin.datasets())}")
        version = builtin.datasets()[name].VERSION
        return builtin.materialize(cache_dir() / "datasets" / f"{name}-v{version}", name=name)
    return Path(root).expanduser()


def _actual_format(path: str, fmt: str) -> str:
    """", and its bytes look like X: name it .x" where a binary format's file is really text (a CSV
    saved as .parquet), or a text one's a Parquet or Arrow file; "" otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return ""
    looks = ("parquet" if head[:4] == b"PAR1" else "arrow" if head[:6] == b"ARROW1" else
             "text (CSV or JSON Lines)" if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "")
    if looks.startswith("text") and fmt in ("csv", "json"):    # which text: a JSON Lines row opens with {
        looks = "json" if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[") else "csv"
        looks = "" if looks == fmt else {"json": "JSON Lines", "csv": "CSV"}[looks]
    if not looks or looks.startswith(fmt) or (fmt in ("csv", "json") and looks.startswith("text")):
        return ""
    return f"; its bytes look like {looks}, not {fmt}: give the file the extension of what it holds"


def resolve_files(root: Optional[str], name: str, field: str, root_field: str = "data.root") -> List[str]:
    """The files one split names (a file, a folder or a glob), checked to exist and be readable."""
    base = resolve_root(root, root_field)
    if base is not None:
        check_link(str(base), root_field)
    pattern = str(base / name) if base is not None else name
    if not glob.has_magic(pattern):
        check_link(pattern, field)
    if os.path.isdir(pattern):
        files = sorted(str(p) for p in Path(pattern).iterdir() if p.suffix in FORMATS)
    else:
        files = sorted(bounded_glob(pattern, field))
    if not files:
        # `eval --data FOLDER` names its folder with root_field "--data": no override there
        where = ("point it at your copy on the command line: data.root=FOLDER" if root_field == "data.root"
                 else f"{root_field} must hold the run's file '{name}', or pass the file itself")
        if base is not None and not base.is_dir():
            raise DataError(f"{root_field}: '{root}' is not a folder here ({where})")
        if base is not None:
            own = f" ({where})" if root_field != "data.root" else ""   # eval's --data: what it must hold
            null = (f"; for no file, write null (YAML reads '{name}' as text)"
                    if name.strip().lower() in ("none", "null", "nil", "~", "") else "")
            raise DataError(f"{field}: no file matches '{name}' under {root_field} '{root}'{own}{null}"
                            f"{_near(base, name)}")
        hint = " (set data.root to the data folder)" if field.startswith("data.") else ""
        raise DataError(f"{field}: no file matches '{name}'{hint}")
    for f in files:
        check_link(f, field)
        check_regular(f, field)
    formats = {file_format(f, field): f for f in files}
    if len(formats) > 1:   # Ray Data reads a split with one reader
        raise DataError(f"{field}: '{name}' matches files of {len(formats)} formats ("
                        + ", ".join(f"{fmt}: {Path(f).name}" for fmt, f in sorted(formats.items()))
                        + "); a split must be one format: narrow the glob or convert the files")
    return files


def _near(root: Path, name: str, most: int = 8) -> str:
    """The data files in the folder `name` looks in (its first parent without a glob), with a
    did-you-mean, for a split's file not found."""
    from peft_ray.errors import suggest

    parts = Path(name).parts[:-1]
    sub = Path(*parts[:next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))])
    folder = root / sub
    try:
        held = sorted(p.name for p in folder.iterdir() if p.suffix in FORMATS)
    except OSError:
        return ""
    where = f"'{sub}'" if str(sub) != "." else "it"
    if not held:
        return f"; {where} holds no data file directly ({', '.join(sorted(FORMATS))})"
    listed = ", ".join(held[:most]) + (f" and {len(held) - most} more" if len(held) > most else "")
    return f"{suggest(Path(name).name, held)}; the data files in {where}: {listed}"


GLOB_ENTRIES = 100_000   # entries of the folders a data glob walks through (a real split's glob sees a few)


def bounded_glob(pattern: str, field: str) -> List[str]:
    """glob.glob's matches (no `**`, hidden names only for a pattern part starting with '.'),
    walked part by part with a budget: more than GLOB_ENTRIES entries visited is an error. glob.glob
    has none, and links make its walk grow without end: '*/' * 12 from '/' (through /proc/*/root)
    or a planted `a -> .` walked for hours."""
    import fnmatch

    anchor, *parts = Path(pattern).parts if Path(pattern).is_absolute() else ("", *Path(pattern).parts)
    found, visited = [anchor], 0
    for i, part in enumerate(parts):
        last, nxt = i == len(parts) - 1, []
        for folder in found:
            if not glob.has_magic(part):
                p = os.path.join(folder, part)
                if os.path.lexists(p) and (last or os.path.isdir(p)):
                    nxt.append(p)
                continue
            try:
                entries = list(os.scandir(folder or "."))
            except OSError:
                continue
            visited += 0 if last else len(entries)   # a big final folder (100,000 shards) is glob's own cost
            if visited > GLOB_ENTRIES:
                raise DataError(f"{field}: the pattern '{pattern}' visits more than {GLOB_ENTRIES:,} files and "
                                "folders; name the data files or a narrower pattern")
            nxt += [os.path.join(folder, e.name) for e in entries if fnmatch.fnmatchcase(e.name, part)
                    and (part.startswith(".") or not e.name.startswith(".")) and (last or _is_dir(e))]
        found = nxt
    return found


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:             # /proc/1/cwd: permission denied
        return False


def check_regular(path: str, field: str) -> None:
    """A data file is a regular file: a FIFO or a link to /dev/zero as `train.csv` blocked or filled
    memory without end."""
    import stat

    if not stat.S_ISREG(os.stat(path).st_mode):
        raise DataError(f"{field}: '{path}' is not a regular file (a pipe, device or folder); point the job at "
                        "the data file itself")


def check_link(path: str, field: str) -> None:
    """A symbolic link that loops or dangles, named with its chain and what to do (else the
    readers fail later with a bare path, or a glob/folder listing silently finds nothing)."""
    import errno

    if not os.path.lexists(path):
        return                                         # plain missing: resolve_files says "no file matches"
    try:
        os.stat(path)
        return
    except OSError as e:
        code = e.errno
    chain, seen, cur = [path], set(), path
    while os.path.islink(cur) and cur not in seen and len(chain) < 8:
        seen.add(cur)
        cur = os.path.join(os.path.dirname(cur), os.readlink(cur))
        chain.append(os.path.normpath(cur))
    shown_chain = " -> ".join(chain) + (" -> ..." if os.path.islink(cur) and cur not in seen else "")
    if code == errno.ELOOP:
        raise DataError(f"{field}: '{path}' is a symbolic link loop ({shown_chain}); point the link at the real "
                        "file or folder (`ln -sfn TARGET LINK`) or name the file itself")
    raise DataError(f"{field}: '{path}' is a symbolic link to something that does not exist ({shown_chain}); "
                    "fix or remove the link, or name the file itself")


def file_format(path: str, field: str = "data") -> str:
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise DataError(f"{field}: '{path}' has extension '{ext}'; supported: {', '.join(sorted(FORMATS))}")
    return FORMATS[ext]


def _zero_bytes(path: str, fmt: str) -> bool:
    """A 0-byte CSV or JSON Lines file: no rows (pyarrow would call it a parse error). A 0-byte
    Parquet or Arrow file is broken, and its reader says so."""
    return fmt in ("csv", "json") and os.path.isfile(path) and os.path.getsize(path) == 0


def csv_text_options(paths: List[str]):
    """pyarrow's ConvertOptions that keep every column of the CSV files as the text it holds (the
    union of their headers' names; a name a file lacks is ignored), an empty cell as null:
    `predict` passes its input columns on, and type inference turned an id '00123' into 123 and a
    code '007' into 7.0, or failed on a late 'A-1' after all the work."""
    import pyarrow.csv as pacsv
    import pyarrow.dataset as pds

    names = {n: None for p in paths if not _zero_bytes(p, "csv") for n in pds.dataset(p, format="csv").schema.names}
    return pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                strings_can_be_null=True, null_values=[""])   # "N/A" stays text


def iter_arrow(files: List[str], columns: Optional[List[str]] = None,
               batch_size: int = 4096, csv_as_text: bool = False) -> Iterator[pa.RecordBatch]:
    """Record batches with pyarrow: Parquet, Arrow and CSV stream (memory stays flat whatever the
    file size); a JSON Lines file is read whole first (pyarrow's JSON reader has no streaming form).
    `csv_as_text`: CSV columns as written (csv_text_options), for rows passed on unchanged."""
    import pyarrow.dataset as pds

    for f in files:
        fmt = file_format(f)
        if _zero_bytes(f, fmt):
            continue   # no rows, as a header-only CSV: said as such (read_schema), not as pyarrow's parse error
        if fmt in ("csv", "json"):
            check_format_bytes(f, fmt)
            check_utf8(f)
        if fmt == "csv":
            check_delimiter(f)
        try:
            if fmt == "json":
                import pyarrow.json as pj

                table = pj.read_json(f)
                check_plain_columns(table.schema, f, columns)
                yield from table.select(columns or table.column_names).to_batches(batch_size)
                continue
            form = ({"arrow": "ipc"}.get(fmt, fmt) if not (csv_as_text and fmt == "csv")
                    else pds.CsvFileFormat(convert_options=csv_text_options([f])))
            ds = pds.dataset(f, format=form)
            check_plain_columns(ds.schema, f, columns)
            yield from ds.to_batches(columns=columns, batch_size=batch_size)
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as e:
            if "straddl" in str(e):                    # a row longer than pyarrow's 1 MiB read block
                check_line_lengths(f)
            if fmt == "json":
                check_json_lines(f)                    # names the line and what is wrong with it
            raise DataError(f"{f}: cannot read as {fmt}: {str(e).splitlines()[0]}. "
                            f"Check the file is complete and (for CSV/JSON) UTF-8 encoded{_actual_format(f, fmt)}"
                            ) from None


READ_BLOCK_BYTES = 1 << 20      # pyarrow's CSV and JSON read block: no row can be longer


def check_line_lengths(path: str) -> None:
    """Names the first line longer than READ_BLOCK_BYTES: pyarrow's own error says only that an
    object "straddles two block boundaries"."""
    with open(path, "rb") as fh:
        for n, line in enumerate(iter(lambda: fh.readline(READ_BLOCK_BYTES + 1), b""), 1):
            if len(line) > READ_BLOCK_BYTES and not line.endswith(b"\n"):
                raise DataError(f"{path}: line {n} is longer than {READ_BLOCK_BYTES >> 20} MiB, which no row may be "
                                "(far more text than a model reads); shorten or drop that row")


OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def check_delimiter(path: str) -> None:
    """peft-ray reads comma-separated CSV; a header without a comma but with ';', a tab or '|' is
    another delimiter (pyarrow would say that 'text' is missing, or that a row has 2 columns)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        header = fh.readline(1 << 16).rstrip("\r\n")
    if "," in header:
        return
    for sep, what in OTHER_DELIMITERS.items():
        if sep in header:
            cols = header.split(sep)
            raise DataError(f"{path}: the CSV header {header[:80]!r} reads as one column: the file looks "
                            f"{what}-delimited ({cols[:6]}), and peft-ray reads comma-separated CSV. Re-save it "
                            f"with commas (e.g. pandas: pd.read_csv(f, sep={sep!r}).to_csv(out, index=False)), or "
                            "as .parquet / .jsonl")


def check_json_lines(path: str) -> None:
    """The first line that is not one JSON object, with its number and the parser's reason, or
    whose value for a key has another JSON type than the earlier lines' (pyarrow's own message
    counts rows from 0 within a block)."""
    import json

    kinds: dict = {}
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                reason = getattr(e, "msg", str(e))
                col = f" at column {e.colno}" if hasattr(e, "colno") else ""
                raise DataError(f"{path}: line {n} is not valid JSON ({reason}{col}): "
                                f"{line[:80].decode('utf-8', 'replace')!r}. A .jsonl file holds one JSON object "
                                "per line, keys and strings in double quotes; fix or remove that line") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {n} is a JSON {type(row).__name__}, not an object; a .jsonl file "
                                'holds one object per line, e.g. {"text": "...", "label": "..."}') from None
            for key, value in row.items():
                kind = _json_kind(value)
                first = kinds.setdefault(key, (kind, n)) if kind != "null" else (kind, n)
                if kind != "null" and first[0] != kind:
                    raise DataError(f"{path}: line {n}: '{key}' is a {kind} ({shown_value(value)}), but line "
                                    f"{first[1]} has a {first[0]} there; give every row the same type in a "
                                    f"column (e.g. quote numbers that are labels)") from None


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}[type(value)]


def shown_value(value) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def check_format_bytes(path: str, fmt: str) -> None:
    """A CSV or JSON Lines file whose bytes are another format's (saved under the wrong extension)
    is named as such: a Parquet file's UTF-8 error advised iconv, which would corrupt it, and JSON
    Lines read as CSV gave columns named '{"text": ...'."""
    said = _actual_format(path, fmt)
    if said:
        raise DataError(f"{path}: cannot read as {fmt}{said}")


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


def read_schema(files: List[str], csv_as_text: bool = False) -> pa.Schema:
    """The first file's columns. Parquet and Arrow files are judged by their stored schema (no
    value is read, and the extension check is left to the reads, which know the columns they
    need); CSV and JSON Lines by a first batch. `csv_as_text`: CSV columns as the reader that
    passes them on will type them (iter_arrow's), so a text column of digits is text."""
    if file_format(files[0]) in ("parquet", "arrow"):   # (a file without rows: the split's scan names it)
        return stored_schema(files[0])
    for batch in iter_arrow(files[:1], batch_size=16, csv_as_text=csv_as_text):
        return batch.schema
    raise DataError(f"{files[0]}: the file is empty (no rows); use a file with rows")


def stored_schema(path: str) -> pa.Schema:
    """A Parquet or Arrow file's stored schema (its footer or header; no value is read)."""
    import pyarrow.dataset as pds

    fmt = file_format(path)
    try:
        return pds.dataset(path, format={"arrow": "ipc"}.get(fmt, fmt)).schema
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read as {fmt}: {str(e).splitlines()[0]}. Check the file is "
                        f"complete{_actual_format(path, fmt)}") from None


def check_plain_files(files: List[str]) -> None:
    """Every column of every Parquet/Arrow file is a plain type, judged by the stored schemas, for a
    reader that takes all columns and is not peft-ray's own (Ray Data's read_parquet in `predict`
    unpickles an `arrow_pickled_object` column in its workers). CSV and JSON Lines hold no extension
    types."""
    for f in files:
        if file_format(f) in ("parquet", "arrow"):
            check_plain_columns(stored_schema(f), f)


def ray_dataset(files: List[str], columns: Optional[List[str]] = None, csv_as_text: bool = False):
    """A lazy Ray Data dataset over the files (only `columns`, where given); nothing is read until
    it is iterated. `csv_as_text`: as iter_arrow's."""
    import ray.data

    fmt = file_format(files[0])
    files = [f for f in files if not _zero_bytes(f, fmt)] or files[:1]   # as iter_arrow reads them
    if fmt == "parquet":
        ds = ray.data.read_parquet(files, columns=columns)
    elif fmt == "csv":
        ds = ray.data.read_csv(files, **({"convert_options": csv_text_options(files)} if csv_as_text else {}))
    elif fmt == "json":
        ds = ray.data.read_json(files, lines=True)
    else:
        from peft_ray.data.arrow_ipc import ArrowIPCDatasource

        return ray.data.read_datasource(ArrowIPCDatasource(files, columns=columns))
    return ds.select_columns(columns) if columns is not None and fmt != "parquet" else ds
