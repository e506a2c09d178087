"""Storage paths as strings: the type of path-valued job fields (PathStr), whether a location is a
URI and which URIs peft-ray takes, joining names onto either, and peft-ray's cache folder.

Pure string checks with no filesystem and no network behind them, so the job schema (spec/) and
the other storage modules can use them without opening anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from pydantic import AfterValidator

SCHEMES = ("file", "s3", "gs", "gcs")  # what pyarrow.fs.FileSystem.from_uri resolves without extras
WHAT_TO_USE = "use a local path, s3://bucket/prefix, gs://bucket/prefix or file:///absolute/path"


def fits_filesystem(value: Optional[str]) -> Optional[str]:
    """A path-valued job field whose names the filesystem can hold (255 bytes a name, 4096 in all),
    checked when the job is read: a longer one is an OSError deep in whatever touches it first."""
    if value is not None and (len(value.encode()) > 4096 or any(len(part.encode()) > 255 for part in value.split("/"))):
        raise ValueError("longer than a filesystem allows (255 bytes a name, 4096 in all)")
    return value


PathStr = Annotated[str, AfterValidator(fits_filesystem)]   # the type of path-valued job fields


def cache_dir() -> Path:
    """Where peft-ray keeps what it makes once (built-in data sets, converted and scratch models)."""
    import os

    return Path(os.environ.get("PEFT_RAY_CACHE", Path.home() / ".cache" / "peft_ray"))


def is_uri(location: str) -> bool:
    return "://" in str(location)


def check_location(value: str) -> str:
    """A supported local path or URI, else ValueError saying what to write instead.
    Pure string checks: building an S3 filesystem may call the network (region lookup)."""
    if not is_uri(value):
        return value
    scheme, _, rest = value.partition("://")
    if scheme.lower() not in SCHEMES:
        raise ValueError(f"'{scheme}://' is not a supported storage scheme; {WHAT_TO_USE}")
    if scheme.lower() == "file" and not rest.startswith("/"):
        raise ValueError(f"a file:// URI needs an absolute path (file:///mnt/runs/x); {WHAT_TO_USE}")
    if scheme.lower() != "file" and not rest.split("/", 1)[0]:
        raise ValueError(f"'{value}' names no bucket; {WHAT_TO_USE}")
    return value


def join(base: str, *names: str) -> str:
    """`base/name/...` for local paths and URIs alike (never pathlib: it folds 's3://' to 's3:/')."""
    return "/".join([str(base).rstrip("/"), *names])
