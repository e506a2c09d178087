"""Which Arrow columns peft-ray reads at all: plain types only (a leaf of the data layer, shared
by the file readers in sources and Ray Data's Arrow datasource in arrow_ipc)."""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import pyarrow as pa

from peft_ray.errors import DataError

EXTENSION_KEY = b"ARROW:extension:name"


def check_plain_columns(schema: pa.Schema, path: str, columns: Optional[List[str]] = None) -> None:
    """Refuse Arrow extension types among the columns read (all, or `columns`), nested ones
    included. A file is data: an extension type's reader can run code (Ray Data's
    `arrow_pickled_object` unpickles every value), and once its type is registered (any process
    that imported ray.data) pyarrow hands back the extension, so the file is judged by its stored
    schema, registered or not. Columns the job never reads (a `datasets` Array2D embedding) pass."""
    for field in schema:
        if columns is not None and field.name not in columns:
            continue
        name = _extension_name(field)
        if name:
            raise DataError(f"{path}: column {field.name!r} is stored as the Arrow extension type {name!r}; "
                            "peft-ray reads plain columns only (text, numbers, booleans and lists of them), "
                            "since an extension type's reader can run code (pickled objects). Re-save the "
                            "column as a plain type, e.g. strings")


def _extension_name(field: pa.Field) -> str:
    """The extension type's name in `field` or any field inside it ('' if none)."""
    if isinstance(field.type, pa.ExtensionType):
        return field.type.extension_name
    if field.metadata and EXTENSION_KEY in field.metadata:       # stored, but its type is not registered here
        return field.metadata[EXTENSION_KEY].decode("utf-8", "replace")
    t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
    if isinstance(t, pa.ExtensionType):
        return t.extension_name
    inner = [t.field(i) for i in range(t.num_fields)] if hasattr(t, "field") else []   # list, struct, map
    return next((n for n in map(_extension_name, inner) if n), "")


def max_text_chars(max_length: int) -> int:
    """The longest text a row may hold in one column: far more than max_length tokens can use (a
    WordPiece token spans at most 100 characters), far less than a few KB of compressed Parquet can
    hold: 200 MB of text in one zstd row of 18 KB took the tokenizer to 13 GB and an abort."""
    return max(100_000, 128 * max_length)


def text_lengths(col) -> Optional[np.ndarray]:
    """Characters per row of a text column, or of a list-of-text column (summed: NER's tokens);
    None for other columns."""
    import pyarrow.compute as pc

    def is_text(t) -> bool:
        return pa.types.is_string(t) or pa.types.is_large_string(t)

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if is_text(col.type):
        return pc.fill_null(pc.utf8_length(col), 0).to_numpy(zero_copy_only=False)
    if (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) and is_text(col.type.value_type):
        flat = pc.fill_null(pc.utf8_length(pc.list_flatten(col)), 0).to_numpy(zero_copy_only=False)
        return np.bincount(pc.list_parent_indices(col).to_numpy(zero_copy_only=False), weights=flat,
                           minlength=len(col)).astype(np.int64)
    return None


def check_text_lengths(table, columns: List[str], max_length: int, where: str, first_row: Optional[int]) -> None:
    """No row holds more than max_text_chars in a column read: named with its row where known."""
    cap = max_text_chars(max_length)
    for name in columns:
        if name not in table.column_names:
            continue
        lengths = text_lengths(table.column(name))
        if lengths is None or not len(lengths) or lengths.max() <= cap:
            continue
        i = int((lengths > cap).argmax())
        row = f"row {first_row + i}" if first_row is not None else "a row"
        raise DataError(f"{where}: {row} holds {int(lengths[i]):,} characters in column {name!r}, more than the "
                        f"{cap:,} a row may hold with model.max_length {max_length}; shorten or split such texts")


def decoded(col):
    """A dictionary-encoded column (a pandas categorical) as its plain values; other columns as they
    are. Chunk by chunk: pyarrow casts a dictionary of strings to strings, but not one of lists or structs."""
    if not pa.types.is_dictionary(col.type):
        return col
    if isinstance(col, pa.ChunkedArray):
        return pa.chunked_array([c.dictionary_decode() for c in col.chunks], type=col.type.value_type)
    return col.dictionary_decode()


def present(col):
    """Per row, whether `col` holds a value training reads: not null, not NaN (numpy and polars
    writers' missing value, which rows.labels.has_value skips), and as text not blank."""
    import pyarrow.compute as pc

    col = decoded(col)      # a pandas categorical: judged by its values, as has_value does
    valid = pc.is_valid(col)
    if pa.types.is_floating(col.type):
        valid = pc.and_(valid, pc.invert(pc.is_nan(col)))
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        valid = pc.and_(valid, pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0))
    return pc.fill_null(valid, False)


def non_empty_lists(col):
    """Per row, whether the list column `col` holds at least one item."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.greater(pc.list_value_length(decoded(col)), 0), False)
