"""Which Arrow columns peft-ray reads at all: plain types only (a leaf of the data layer, shared
by the file readers in sources and Ray Data's Arrow datasource in arrow_ipc)."""

from __future__ import annotations

from typing import List, Optional

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
