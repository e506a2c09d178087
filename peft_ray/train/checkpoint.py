"""Checkpoints: only what resuming needs (adapter + optimizer + scheduler + RNG +
position), every rank writing its own ZeRO shard, every file checksummed.

    checkpoint/
      ds/state/...               # DeepSpeed: trainable params, per-rank optimizer shards, scheduler
      adapter/                   # rank 0: the HF PEFT adapter at this step (gathered under ZeRO-3)
      trainer_state.json         # rank 0: step, epoch, position in epoch, world size, metrics
      rng_rank{r}.safetensors    # each rank: torch RNG state (dropout) for exact resumption
      MANIFEST.rank{r}.json      # each rank, written last: sha256 of the files that rank wrote
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from peft_ray.storage import Location, is_uri
from peft_ray.train.dist import rank, world

TAG = "state"


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0     # micro-batches of `epoch` already consumed
    samples: float = 0          # samples seen, all workers
    tokens: float = 0           # real (non-pad, non-virtual) tokens seen, all workers
    train_seconds: float = 0.0
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


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(engine, state: TrainerState, local_dir: Path, write_adapter_fn,
                    fail_midway: bool = False) -> Path:
    """Every rank calls this (ZeRO shards and the ZeRO-3 gather are collective).

    It writes into a staging folder that only becomes a checkpoint when complete (Ray
    persists it after this returns; --local renames it), so a failure here, such as a
    full disk, leaves the previous checkpoints untouched."""
    from safetensors.torch import save_file

    local_dir.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(local_dir / "ds"), tag=TAG, exclude_frozen_parameters=True)
    write_adapter_fn(local_dir / "adapter")  # collective gather; rank 0 writes
    if fail_midway:
        import errno

        raise OSError(errno.ENOSPC, "No space left on device (injected while writing a checkpoint)")
    r = rank()
    save_file({"cpu": torch.get_rng_state()}, str(local_dir / f"rng_rank{r}.safetensors"))
    if r == 0:
        (local_dir / "trainer_state.json").write_text(json.dumps(asdict(state), indent=1))
    files = sorted(p for p in local_dir.rglob("*") if p.is_file() and not p.name.startswith("MANIFEST"))
    manifest = {str(p.relative_to(local_dir)): sha256(p) for p in files}
    (local_dir / f"MANIFEST.rank{r}.json").write_text(json.dumps(manifest, indent=1))
    return local_dir


def validate_checkpoint(path: Path) -> Tuple[bool, str]:
    """(ok, reason). A checkpoint is good when every rank's manifest is there and matches."""
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        return False, "trainer_state.json is missing"
    try:
        state = json.loads(state_file.read_text())
    except ValueError:
        return False, "trainer_state.json is corrupt"
    manifests = sorted(path.glob("MANIFEST.rank*.json"))
    if len(manifests) != state.get("world_size", 1):
        return False, f"{len(manifests)} of {state.get('world_size')} rank manifests present"
    for m in manifests:
        try:
            entries = json.loads(m.read_text())
        except ValueError:
            return False, f"{m.name} is corrupt"
        for rel, digest in entries.items():
            f = path / rel
            if not f.is_file():
                return False, f"{rel} is missing"
            if sha256(f) != digest:
                return False, f"{rel} does not match its checksum (truncated or corrupt)"
    return True, "ok"


def load_checkpoint(engine, path: Path) -> TrainerState:
    """Restore params, optimizer shard, scheduler, RNG and position on this rank."""
    from safetensors.torch import load_file

    raw = json.loads((path / "trainer_state.json").read_text())
    if raw["world_size"] != world():
        raise RuntimeError(f"checkpoint {path} was written by {raw['world_size']} workers; resume with "
                           f"scaling.num_workers={raw['world_size']} (ZeRO shards are per rank)")
    engine.load_checkpoint(str(path / "ds"), tag=TAG, load_module_strict=False,
                           load_optimizer_states=True, load_lr_scheduler_states=True)
    rng = path / f"rng_rank{rank()}.safetensors"
    if rng.exists():
        torch.set_rng_state(load_file(str(rng))["cpu"])
    return TrainerState(**raw)


def checkpoint_step(path: Union[Path, str, Location]) -> int:
    """The checkpoint's global step (-1 when unreadable); local paths, URIs or Locations."""
    if isinstance(path, str) and is_uri(path):
        path = Location.at(path)
    try:
        return int(json.loads((path / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError):
        return -1


def checkpoint_dirs(root: Path) -> List[Path]:
    """Checkpoint folders under a run's storage, oldest first (by step, then name)."""
    dirs = [p for p in root.rglob("checkpoint_*") if p.is_dir()]
    return sorted(dirs, key=lambda p: (checkpoint_step(p), p.name))


def latest_good_checkpoint(root: Union[Path, str], warn=print) -> Optional[Union[Path, str]]:
    """Newest checkpoint that validates; corrupt ones are skipped with a warning.
    A URI root (s3://, gs://, file://) gives the checkpoint's URI."""
    if is_uri(str(root)):
        return _latest_good_at_uri(Location.at(str(root)), warn)
    for path in reversed(checkpoint_dirs(Path(root))):
        ok, why = validate_checkpoint(path)
        if ok:
            return path
        warn(f"warning: skipping checkpoint {path}: {why}")
    return None


def _latest_good_at_uri(root: Location, warn) -> Optional[str]:
    """Each candidate, newest first, is downloaded and validated like a local one."""
    found = sorted((root / n for n in _checkpoint_names(root.files())), key=lambda c: (checkpoint_step(c), c.name))
    for loc in reversed(found):
        with tempfile.TemporaryDirectory(prefix="peft-ray-check-") as tmp:
            ok, why = validate_checkpoint(loc.download(Path(tmp) / loc.name))
        if ok:
            return loc.uri
        warn(f"warning: skipping checkpoint {loc.uri}: {why}")
    return None


def _checkpoint_names(files: List[str]) -> set:
    """The checkpoint_* folders among the files' parents (object stores list files, not folders)."""
    names = set()
    for rel in files:
        parts = rel.split("/")[:-1]
        first = next((i for i, part in enumerate(parts) if part.startswith("checkpoint_")), None)
        if first is not None:
            names.add("/".join(parts[:first + 1]))
    return names
