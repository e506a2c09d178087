"""The columns of every file of a split, before any row is read: present, text where the template
renders them, lists where the task reads lists, and one type across the split's files."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import pyarrow as pa

from peft_ray.data.sources import read_schema
from peft_ray.errors import DataError, suggest
from peft_ray.spec.schema import JobSpec
from peft_ray.tasks import get_task
from peft_ray.tasks.pipeline import column_fields


def _to_text(col: str, kind: pa.DataType) -> str:
    """How to make such a column text in pandas: astype(str) on a list or struct writes its repr
    ("['great', 'movie']"), which would then train without a word (a new-user review)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"a list of words: df['{col}'] = df['{col}'].str.join(' ')"
    if pa.types.is_struct(kind):
        return f"a struct: pick its text field, df['{col}'] = df['{col}'].str['FIELD']"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return f"bytes: df['{col}'] = df['{col}'].str.decode('utf-8')"
    return f"e.g. pandas: df['{col}'] = df['{col}'].astype(str)"


def suggest_column(col: str, names: List[str]) -> str:
    """suggest(), where the near name is one a template can say: `{review text}` cannot be written (a
    field is a plain name), so a column named so was suggested and then refused as a field."""
    import difflib

    from peft_ray.templates import is_field_name

    near = difflib.get_close_matches(col, names, n=1, cutoff=0.6)
    if near and not is_field_name(near[0]):
        return (f" (the file has '{near[0]}', which a template field cannot name: fields are letters, digits and "
                f"_; rename the column in the file, e.g. pandas: df.rename(columns={{'{near[0]}': '{col}'}}))")
    return suggest(col, names)


def check_columns(schema: pa.Schema, spec: JobSpec, where: str, read: Optional[List[str]] = None,
                  path: Optional[str] = None) -> None:
    """The columns the command reads (`read`; default: every column training reads) are in the file,
    text where the template renders them, lists where the task reads lists."""
    names = schema.names
    for col, field_name in column_fields(spec).items():
        if read is not None and col not in read:
            continue
        if col not in names:
            raise DataError(f"{field_name}: column '{col}' is not in {where}{suggest_column(col, names)}; "
                            f"its columns are {names}")
        if field_name == "template.text" and not _is_text(schema.field(col).type):
            # Rendering would stringify it: bytes as "b'\\xff...'", numbers as digits the
            # template never asked for. Text must be text in the file itself.
            raise DataError(f"template.text: column '{col}' of {where} holds {schema.field(col).type}, "
                            "not text; the template renders text columns only. Store it as a string "
                            f"column ({_to_text(col, schema.field(col).type)}), or use another column")
    check_list_columns(schema, spec, where, path or where, read=read)


def check_files_agree(files: List[str], spec: JobSpec, field_name: str, read: Optional[List[str]] = None,
                      same_type: Optional[List[str]] = None, option: str = "", csv_as_text: bool = False) -> None:
    """Every file of a split, not only the first, passes check_columns, and the columns read (and
    `same_type`) have one type across the files. Ray Data reads a split's files as one table and
    stopped at a type it cannot merge (`label` int64 in one shard, string in the next) after the
    cluster had started, and a later shard without a column gave raw KeyErrors or null predictions.
    Parquet and Arrow files cost a footer read each, CSV and JSON Lines a first batch. `option`: the
    command-line option the files came from (eval's --data), named with each file. `csv_as_text`:
    CSV columns typed as text, as predict reads them (read_schema's)."""
    typed: Dict[str, Tuple[str, pa.DataType]] = {}
    for path in files:
        try:
            schema = read_schema([path], csv_as_text=csv_as_text)
        except DataError as e:
            raise DataError(f"{field_name}: {e}") from None
        check_columns(schema, spec, f"{option} '{path}'" if option else path, read, path)
        for col in (same_type or read or list(column_fields(spec))):
            if col not in schema.names or pa.types.is_null(schema.field(col).type):
                continue           # (a column all null in one file takes any type)
            first, t = typed.setdefault(col, (path, schema.field(col).type))
            if not _unify(t, schema.field(col).type):
                raise DataError(f"{field_name}: column '{col}' holds {t} in {first} but {schema.field(col).type} "
                                f"in {path}, which cannot be one column; a split's files are read as one table, so "
                                "store the column with one kind of value in every file (all numbers, or all text)")


def _unify(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether two files' types of a column can be one column: widths and encodings merge (int32 and
    int64, string and large_string, int and float), as Ray Data's reads merge them; int and text do not."""
    try:
        pa.unify_schemas([pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive")
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False


def check_list_columns(schema: pa.Schema, spec: JobSpec, where: str, path: str,
                       read: Optional[List[str]] = None) -> None:
    """The task's list columns (NER's words and tags) that the command reads (`read`: all) hold lists in
    the file `path`: a CSV cell is text, and `["EU", "rejects"]` there read as one 20-character word,
    or as one unknown tag."""
    for col, field_name in get_task(spec.task.type).list_columns(spec.task).items():
        if col not in schema.names or (read is not None and col not in read):
            continue
        t = schema.field(col).type
        if not (pa.types.is_null(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
                or pa.types.is_fixed_size_list(t)):
            fix = ("CSV cells cannot hold lists: store the data as Parquet or JSON Lines (a JSON array per row)"
                   if path.lower().endswith((".csv", ".tsv")) else
                   "store one list per row (Parquet list<string>, or a JSON array per row in JSON Lines)")
            raise DataError(f"{field_name}: column '{col}' of {where} holds {t}, not a list (one entry per word); "
                            f"{fix}")


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):   # an empty or all-null column: the row scan names it
        return True
    return pa.types.is_string(t) or pa.types.is_large_string(t) or \
        (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))
