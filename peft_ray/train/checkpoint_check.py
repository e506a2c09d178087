"""Whether a checkpoint folder can be trusted, checked before anything in it is loaded: its JSON
files read as data (regular files of at most MAX_JSON_BYTES), trainer_state.json parsed into a
TrainerState field by field, and validate_checkpoint: every rank's manifest present and matching
(sha256), naming only files inside the checkpoint, and nothing planted (no link, FIFO or device,
no file in no manifest, anywhere).

Checkpoint folders are shared (NFS, S3, a copied run), so all of this treats them as untrusted.
TrainerState is defined here, beside the parser that checks trainer_state.json against its fields;
checkpoint.py (save, load, finding the newest good checkpoint) imports this module and re-exports
its names, never the other way round. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from peft_ray.storage import Location


# How this peft-ray orders and cuts training rows: a checkpoint's position inside an epoch means
# "this many micro-batches of that order", so resume.note_data_changes says where it moved.
#   0: a checkpoint that records none (written before 2026-12-07)
#   1: a worker's shard over train/data_iter.IN_MEMORY_ROWS rows is permuted whole every epoch (it was
#      read in file order, shuffled within windows); a classification row longer than model.max_length
#      loses the end of its input columns (rows.tokens.fit_columns), not the template's words after them
#   2: an epoch's last rows short of a whole step are set apart after the shuffle (data/batching._emit),
#      where the ragged micro-batch was cut before it, so that last window is shuffled otherwise
DATA_VERSION = 2


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0     # micro-batches of `epoch` already consumed
    samples: float = 0          # samples seen, all workers
    tokens: float = 0           # real (non-pad, non-virtual) tokens seen, all workers
    train_seconds: float = 0.0  # forward + backward + optimizer step (rank 0's clock; every rank steps together)
    data_seconds: float = 0.0   # waiting for the next micro-batch (Ray Data / the local reader)
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0  # ZeRO shards + adapter written and reported
    skipped_nonfinite: int = 0
    last_loss: float = float("nan")
    truncated: float = 0        # rows cut at model.max_length (counted in the first epoch)
    world_size: int = 1
    loss_sum: float = 0.0       # train loss summed over every micro-batch of every rank (mean: / micro_batches)
    micro_batches: float = 0
    best_score: Optional[float] = None  # best/ bookkeeping (peft_ray/train/best.py): higher is better
    best_step: int = 0
    evals_since_best: int = 0
    history: List[Dict[str, float]] = field(default_factory=list)
    data_version: int = DATA_VERSION   # a new run's; parse_state reads 0 where a checkpoint records none


MAX_JSON_BYTES = 8 << 20   # trainer_state.json and a rank's manifest are a few KiB


def read_json(path: Union[Path, Location]):
    """A checkpoint's JSON file, read as data: checkpoint folders are shared (NFS, S3, a copied
    run), and a FIFO there would block and /dev/zero never end. ValueError unless it is a regular
    file of at most MAX_JSON_BYTES."""
    loc = path if isinstance(path, Location) else Location.at(path)
    text = loc.read_small_text(MAX_JSON_BYTES)
    if text is None:
        raise ValueError(f"not a regular file of at most {MAX_JSON_BYTES} bytes of UTF-8 text")
    return json.loads(text)


MAX_COUNT = 2 ** 53   # the largest count JSON readers hold exactly; no run reaches it

# trainer_state.json's fields by kind. A field of the wrong type got through the old check and
# crashed a resume only after training had started (best_score "high": TypeError in update_best).
COUNTS = ("global_step", "epoch", "micro_in_epoch", "skipped_nonfinite", "world_size", "best_step",
          "evals_since_best", "data_version")
AMOUNTS = ("samples", "tokens", "train_seconds", "data_seconds", "eval_seconds", "checkpoint_seconds",
           "truncated", "micro_batches")   # non-negative finite numbers
LEVELS = ("loss_sum",)                     # finite numbers


def parse_state(raw) -> TrainerState:
    """trainer_state.json's content as a TrainerState, or ValueError saying what is wrong: a
    checkpoint folder may have been edited, and a bad one must be skipped, not crash a resume."""
    from dataclasses import fields

    if not isinstance(raw, dict):
        raise ValueError(f"it holds a JSON {type(raw).__name__}, not an object")
    unknown = sorted(set(raw) - {f.name for f in fields(TrainerState)})
    if unknown:
        raise ValueError(f"unknown field '{unknown[0]}'")
    for name in COUNTS:
        least = 1 if name == "world_size" else 0
        value = raw.get(name, least)
        if not _is_int(value) or not least <= value < MAX_COUNT:
            raise ValueError(f"{name} is {_shown(value)}, not an integer from {least} to {MAX_COUNT - 1}")
    for name in AMOUNTS + LEVELS:
        value = raw.get(name, 0.0)
        if not _is_number(value) or not math.isfinite(value) or (name in AMOUNTS and value < 0):
            raise ValueError(f"{name} is {_shown(value)}, not a finite{' non-negative' if name in AMOUNTS else ''} "
                             "number")
    last = raw.get("last_loss", float("nan"))   # nan: no step taken yet
    if not _is_number(last) or math.isinf(last):
        raise ValueError(f"last_loss is {_shown(last)}, not a finite number (or NaN before the first step)")
    best = raw.get("best_score")                # None: nothing evaluated yet
    if best is not None and (not _is_number(best) or math.isnan(best)):
        raise ValueError(f"best_score is {_shown(best)}, not a number (or null before the first evaluation)")
    _check_history(raw.get("history", []))
    return TrainerState(**{"data_version": 0, **raw})


def _check_history(history) -> None:
    """A list of evaluations, each {metric: number} (log_eval appends them; NaN is a metric's own)."""
    if not isinstance(history, list):
        raise ValueError("history is not a list")
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            raise ValueError(f"history[{i}] is {_shown(entry)}, not an object")
        # as log_eval keeps them: isinstance(v, (int, float))
        bad = next((k for k, v in entry.items() if not isinstance(v, (int, float))), None)
        if bad is not None:
            raise ValueError(f"history[{i}].{bad} is {_shown(entry[bad])}, not a number")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value) -> str:
    """A value in a reason line, short whatever was written there."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _inside(root: Path, rel) -> bool:
    """Whether `rel` names a path inside `root`: relative, no `..`, no link leading out.
    A manifest must never make validation read (or report on) files elsewhere."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        return False
    try:
        return (root / rel).resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):          # a link loop
        return False


def validate_checkpoint(path: Path) -> Tuple[bool, str]:
    """(ok, reason). A checkpoint is good when every rank's manifest is there and matches,
    names only files inside the checkpoint, and every file in it is listed: nothing planted, and no
    link anywhere in it (the folder itself included)."""
    if path.is_symlink():
        return False, "the checkpoint folder is a link"
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        return False, "trainer_state.json is missing (or not a regular file)"
    try:
        state = parse_state(read_json(state_file))
    except (ValueError, RecursionError) as e:
        return False, f"trainer_state.json is corrupt ({str(e)[:120]})"
    manifests = sorted(path.glob("MANIFEST.rank*.json"))
    if len(manifests) != state.world_size:
        return False, f"{len(manifests)} of {state.world_size} rank manifests present"
    listed: Dict[str, str] = {}
    for m in manifests:
        try:
            entries = read_json(m)
        except (ValueError, RecursionError):
            return False, f"{m.name} is corrupt"
        if not isinstance(entries, dict):
            return False, f"{m.name} is corrupt"
        outside = next((rel for rel in entries if not _inside(path, rel)), None)
        if outside is not None:
            return False, (f"{m.name} names '{outside}', outside the checkpoint (refused: a manifest "
                           "lists only files of its own checkpoint)")
        listed.update(entries)
    # Before any file is read: DeepSpeed loads every file under ds/, and the adapter/ of the best
    # and last checkpoints becomes the run's adapter/, so a link there would pass its target on.
    planted = _planted(path, set(listed) | {m.name for m in manifests})
    if planted:
        return False, planted
    for rel, digest in listed.items():
        if not (path / rel).is_file():
            return False, f"{rel} is missing"
        if sha256(path / rel) != digest:
            return False, f"{rel} does not match its checksum (truncated or corrupt)"
    return True, "ok"


def _planted(path: Path, own: set) -> Optional[str]:
    """What is wrong with the first entry of the checkpoint that no rank wrote, else None: a link
    (anywhere; never followed), something neither a folder nor a regular file (a FIFO would
    block a read), or a file in no manifest. `own`: the files the manifests list, and themselves."""
    import os
    import stat

    for folder, dirs, files in os.walk(path):       # does not descend into linked folders
        for name in sorted(dirs + files):
            p = Path(folder) / name
            rel = p.relative_to(path).as_posix()
            try:
                mode = p.lstat().st_mode
            except OSError:                          # removed while we looked (a pruned checkpoint)
                return f"{rel} went away while the checkpoint was checked"
            if stat.S_ISLNK(mode):
                return f"{rel} is a link (a checkpoint holds only the files its ranks wrote)"
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                return f"{rel} is not a regular file"
            if stat.S_ISREG(mode) and rel not in own:
                return f"{rel} is in no manifest (added after the checkpoint was written)"
    return None
