"""What a run's data files were, so that `--resume` can tell whether they still are: data.root may
change (the same files copied or mounted elsewhere), but a root holding other files under the same
names restored the data position of one data set into another without a word (a resume review).
Each file is known by its size and the sha256 of its first and last 64 KiB: cheap for any size and
any number of shards, and any edit that changes the size, the header or the footer (Parquet keeps
its schema, row-group offsets and statistics there) changes it. Torch-free."""

from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Optional

SAMPLE_BYTES = 64 << 10
RECORD = "data_files.json"   # in the run folder, beside job.yaml


def fingerprint(files: List[str]) -> List[Dict]:
    """[{path, bytes, sha256}] of `files`, in their order (resolve_files sorts them)."""
    out = []
    for path in files:
        size = os.path.getsize(path)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            h.update(f.read(SAMPLE_BYTES))
            if size > SAMPLE_BYTES:
                f.seek(max(size - SAMPLE_BYTES, SAMPLE_BYTES))
                h.update(f.read(SAMPLE_BYTES))
        out.append({"path": path, "bytes": size, "sha256": h.hexdigest()})
    return out


def difference(recorded: Dict, now: Dict) -> Optional[str]:
    """The first way `now` ({split field: fingerprint}) reads other data than `recorded` did, or
    None; a split either side does not record is not compared (a record of an older peft-ray)."""
    for split, new in now.items():
        old = recorded.get(split) if isinstance(recorded, dict) else None
        if not isinstance(old, list) or not all(isinstance(o, dict) for o in old):
            continue
        if len(old) != len(new):
            return f"{split} now reads {len(new)} file(s) and the run read {len(old)}"
        for o, n in zip(old, new):
            if (o.get("bytes"), o.get("sha256")) != (n["bytes"], n["sha256"]):
                return (f"{split}: {n['path']} ({n['bytes']:,} bytes) is not the file the run read as "
                        f"{o.get('path')} ({_count(o.get('bytes'))} bytes), though the name may be the same")
    return None


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)
