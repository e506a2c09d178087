"""Checkpoints: only what resuming needs (adapter + optimizer + scheduler + RNG +
position), every rank writing its own ZeRO shard, every file checksummed.

    checkpoint/
      ds/state/...               # DeepSpeed: trainable params, per-rank optimizer shards, scheduler
      adapter/                   # rank 0: the HF PEFT adapter at this step (gathered under ZeRO-3)
      trainer_state.json         # rank 0: step, epoch, position in epoch, world size, metrics
      report.json                # rank 0: what this step reported (metrics.json's source if the run ends here)
      rng_rank{r}.safetensors    # each rank: torch RNG state (dropout) for exact resumption
      MANIFEST.rank{r}.json      # each rank, written last: sha256 of the files that rank wrote

Validating a checkpoint folder (and TrainerState, read_json, sha256) lives in checkpoint_check.py,
the safe unpickling of DeepSpeed's files in safe_load.py; both are re-exported here.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from peft_ray.errors import CheckpointError
from peft_ray.storage import Location, is_uri
from peft_ray.dist import rank, world
from peft_ray.train.checkpoint_check import (DATA_VERSION, TrainerState, parse_state, read_json, sha256,
                                              validate_checkpoint)
from peft_ray.train.safe_load import TensorsOnlyLoader

TAG = "state"
REPORT = "report.json"


def save_checkpoint(engine, state: TrainerState, local_dir: Path, write_adapter_fn,
                    fail_midway: bool = False, report: Optional[Dict] = None) -> Path:
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
    save_file(rng_states(), str(local_dir / f"rng_rank{r}.safetensors"))
    if r == 0:
        (local_dir / "trainer_state.json").write_text(json.dumps(asdict(state), indent=1))
        if report is not None:   # a run stopped between its last checkpoint and its outputs is finished from it
            (local_dir / REPORT).write_text(json.dumps(report, indent=1))
    files = sorted(p for p in local_dir.rglob("*") if p.is_file() and not p.name.startswith("MANIFEST"))
    manifest = {str(p.relative_to(local_dir)): sha256(p) for p in files}
    (local_dir / f"MANIFEST.rank{r}.json").write_text(json.dumps(manifest, indent=1))
    return local_dir


# What DeepSpeed (ZeRO-1/2's alignment check) and torch's Optimizer.load_state_dict say when the
# saved optimizer has other parameter groups than this run's.
GROUP_MISMATCH = ("parameter-alignment layout does not match", "different number of parameter groups",
                  "doesn't match the size of optimizer's group")


# What torch's Module.load_state_dict says when the saved tensors are not this model's (a checkpoint
# of another job: a prompt of 10 tokens loaded into one of 20).
STATE_DICT_MISMATCH = "Error(s) in loading state_dict"


def mismatch(error: Exception) -> str:
    """The first parameter torch named in its state-dict error ("size mismatch for prompt: ..."),
    without the model's class name and the list of every other one."""
    lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    return (lines[0] if lines else str(error).splitlines()[0])[:300].rstrip(".")


def load_checkpoint(engine, path: Path) -> TrainerState:
    """Restore params, optimizer shard, scheduler, RNG and position on this rank."""
    state = parse_state(read_json(path / "trainer_state.json"))   # validated already
    # resume.check_checkpoint_fits says it first, in the driver; a worker group of another size meets this
    if state.world_size != world():
        raise CheckpointError(f"checkpoint {path} was written by {state.world_size} workers and this run has "
                              f"{world()}; resume with scaling.num_workers={state.world_size} (ZeRO shards are "
                              "per rank)")
    original = engine.checkpoint_engine
    engine.checkpoint_engine = TensorsOnlyLoader(original)
    try:
        engine.load_checkpoint(str(path / "ds"), tag=TAG, load_module_strict=False,
                               load_optimizer_states=True, load_lr_scheduler_states=True)
    except (RuntimeError, ValueError) as e:
        if STATE_DICT_MISMATCH in str(e):
            raise CheckpointError(f"checkpoint {path} does not fit this job's model: {mismatch(e)}. It was written "
                                  "by a job with other method or model fields (method, its size such as "
                                  "num_virtual_tokens or r, target_modules, the base model). Resume it with the job "
                                  "that wrote it, or start afresh with --overwrite or another output.dir") from None
        # ZeRO's flat optimizer partitions follow the parameter groups: another grouping (weight
        # decay now skips biases and norms, head_lr, LoRA+, other trainable parameters) cannot load.
        # Other failures (a corrupt file, memory) keep their own message.
        if not any(m in str(e) for m in GROUP_MISMATCH):
            raise
        raise CheckpointError(f"checkpoint {path}: its optimizer state does not fit this run's parameter groups "
                              f"({str(e).splitlines()[0][:200]}); it was written by another peft-ray version or "
                              "job. Start again with --overwrite, or resume with the version and job that wrote "
                              "it") from None
    finally:
        engine.checkpoint_engine = original
    # DeepSpeed's ZeRO and bf16 optimizers restore the saved clip_grad over the engine's own: a
    # --resume with another train.max_grad_norm (a field it may change) recorded the new value and
    # clipped at the old one (a resume review). This run's setting is the engine config's.
    if hasattr(engine.optimizer, "clip_grad"):
        engine.optimizer.clip_grad = float(engine.gradient_clipping() or 0.0)
    rng = path / f"rng_rank{rank()}.safetensors"
    if rng.exists():
        torch.set_rng_state(read_rng_state(rng))
        cuda = read_cuda_rng_state(rng)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)
    # from here on the run reads its rows as this version does (the driver said what moved:
    # resume.note_data_changes), so its own checkpoints record this version
    state.data_version = DATA_VERSION
    return state


def rng_states() -> dict:
    """This rank's generators: the CPU one, and the current GPU's when CUDA is in use (GPU dropout
    draws from it, so an exact resume needs it too)."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def read_cuda_rng_state(path: Path):
    """The saved GPU generator state, when the checkpoint has one and this process uses CUDA
    (a checkpoint from a GPU run resumed on the CPU has no GPU generator to restore)."""
    from safetensors import safe_open

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    with safe_open(str(path), framework="pt") as f:
        if "cuda" not in f.keys():
            return None
        value = f.get_tensor("cuda")
    return value if value.dtype == torch.uint8 and value.dim() == 1 else None


def read_rng_state(path: Path) -> torch.Tensor:
    """A rank's saved CPU RNG state: one uint8 tensor the size of torch's own, or a CheckpointError."""
    from safetensors.torch import load_file

    from peft_ray.errors import CheckpointError

    expected = torch.get_rng_state()
    try:
        value = load_file(str(path)).get("cpu")
    except Exception as e:                    # SafetensorError: truncated, not safetensors
        value, why = None, str(e)[:120]
    else:
        why = "no uint8 'cpu' tensor of torch's RNG-state size"
    if value is None or value.dtype != expected.dtype or value.shape != expected.shape:
        raise CheckpointError(f"refusing to resume from {path.parent}: {path.name} is not an RNG state "
                              f"({why}). Delete that checkpoint folder to resume from an earlier one")
    return value



def read_state(path: Union[Path, str, Location]) -> Optional[TrainerState]:
    """The checkpoint's TrainerState (None when unreadable); local paths, URIs or Locations."""
    if isinstance(path, str):
        path = Location.at(path) if is_uri(path) else Path(path)
    try:
        return parse_state(read_json(path / "trainer_state.json"))
    except (OSError, ValueError, RecursionError):
        return None


def read_report(path: Union[Path, str, Location]) -> Optional[Dict]:
    """What the checkpoint's step reported (report.json: metrics and run figures), None where the
    checkpoint has none (written before peft-ray kept it) or it is not a JSON object."""
    if isinstance(path, str):
        path = Location.at(path) if is_uri(path) else Path(path)
    try:
        raw = read_json(path / REPORT)
    except (OSError, ValueError, RecursionError):
        return None
    return raw if isinstance(raw, dict) else None


def checkpoint_step(path: Union[Path, str, Location]) -> int:
    """The checkpoint's global step (-1 when unreadable)."""
    state = read_state(path)
    return -1 if state is None else state.global_step


def checkpoint_dirs(root: Path) -> List[Path]:
    """Checkpoint folders under a run's storage, oldest first (by step, then name)."""
    return [p for _, p in _by_step(p for p in root.rglob("checkpoint_*") if p.is_dir())]


def _by_step(found) -> List[Tuple[int, Any]]:
    """(step, checkpoint) oldest first, each trainer_state.json read once (-1: unreadable)."""
    return sorted(((checkpoint_step(c), c) for c in found), key=lambda sc: (sc[0], sc[1].name))


def latest_good_checkpoint(root: Union[Path, str], warn=print) -> Optional[Union[Path, str]]:
    """Newest checkpoint that validates; corrupt ones are skipped with a warning.
    A URI root (s3://, gs://, file://) gives the checkpoint's URI."""
    if is_uri(str(root)):
        return _latest_good_at_uri(Location.at(str(root)), warn)
    for path in _newest_first(_by_step(p for p in Path(root).rglob("checkpoint_*") if p.is_dir())):
        ok, why = validate_checkpoint(path)
        if ok:
            return path
        warn(f"warning: skipping checkpoint {path}: {why}")
    return None


def _newest_first(steps: List[Tuple[int, Any]]) -> List[Any]:
    """The order to try checkpoints in: those whose trainer_state.json cannot be read first (they
    have no step, Ray names checkpoints by time, so they sorted as the oldest and were passed over
    unseen behind a good one however new: a resume review), so each is said as skipped; then the
    rest newest first."""
    return [c for step, c in steps if step < 0] + [c for step, c in reversed(steps) if step >= 0]


def checkpoint_at_step(root: Union[Path, str], step: int) -> Optional[str]:
    """A checkpoint under `root` (a path or a URI) that validates and holds global step `step`."""
    if is_uri(str(root)):
        loc = Location.at(str(root))
        for cand in sorted(_checkpoint_names(loc.files())):
            if checkpoint_step(loc / cand) == step:
                with tempfile.TemporaryDirectory(prefix="peft-ray-check-") as tmp:
                    if validate_checkpoint((loc / cand).download(Path(tmp) / "c"))[0]:
                        return (loc / cand).uri
        return None
    if not Path(root).is_dir():
        return None
    for path in reversed(checkpoint_dirs(Path(root))):
        if checkpoint_step(path) == step and validate_checkpoint(path)[0]:
            return str(path)
    return None


def _latest_good_at_uri(root: Location, warn) -> Optional[str]:
    """Each candidate, newest first, is downloaded and validated like a local one."""
    for loc in _newest_first(_by_step(root / n for n in _checkpoint_names(root.files()))):
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
