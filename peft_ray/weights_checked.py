"""A record of model folders whose config.json and weights were found to match (models.check_weights_match).

That check builds the model on the meta device, which costs the driver the import of the model's
transformers module: 2.5-3.5 s of every Ray-mode job's start on 2 cores, for a driver that never
builds the model otherwise. Its answer depends only on config.json, the safetensors headers (the
tensors' names, dtypes and shapes), the transformers version and the check itself, so a match is
recorded under a hash of exactly those, and the same folder is not built again. Values are not
part of the key: they do not enter the check. Any change to what does gives another key, and the
check runs again. Folders that run their own code (trust_remote_code) are never recorded: their
modelling code is outside the key. The record is a marker file; nothing in it is ever read back.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Optional

from peft_ray.storage import cache_dir

CHECK_VERSION = b"peft-ray weights check 1"   # raise when models.weights_problem changes what it accepts
MAX_HEADER = 100 << 20                         # safetensors' own limit on a header


def match_key(folder: str | Path) -> Optional[str]:
    """The hash a match of this local folder is recorded under; None where it cannot be keyed (not a
    folder, no config.json, a weights file that is not safetensors or cannot be read)."""
    from importlib.metadata import version

    p = Path(folder)
    if not p.is_dir() or not (p / "config.json").is_file():
        return None
    h = hashlib.sha256(CHECK_VERSION)
    h.update(version("transformers").encode())
    try:
        h.update((p / "config.json").read_bytes())
        for f in sorted(p.glob("*.safetensors.index.json")):
            h.update(f.name.encode() + f.read_bytes())
        weights = sorted(p.glob("*.safetensors"))
        if not weights or not all(f.is_file() for f in weights):   # (a pipe is never opened here)
            return None
        for f in weights:
            h.update(f.name.encode() + _header(f))
    except (OSError, ValueError, struct.error):
        return None
    return h.hexdigest()


def _header(path: Path) -> bytes:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER:
            raise ValueError(f"{path}: not a safetensors header")
        return f.read(n)


def _marker(key: str) -> Path:
    return cache_dir() / "checked-weights" / key


def already_matched(key: Optional[str]) -> bool:
    return key is not None and _marker(key).is_file()


def record_match(key: Optional[str]) -> None:
    """Best effort: an unwritable cache only means the check runs again next time."""
    if key is None:
        return
    try:
        _marker(key).parent.mkdir(parents=True, exist_ok=True)
        _marker(key).touch()
    except OSError:
        pass
