"""`train --resume`: what may change between a run and its continuation, where its checkpoints are, and
a run that has nothing left to train.

A resumed run restores the adapter, the optimizer and scheduler state, the RNG and the exact data
position from its checkpoint. That holds only for the job the checkpoint was trained with, so the
fields that define the model, the data order or the optimisation must be the run's own; what only
says how long to train, how often to evaluate or save, or where things run may change (HF Trainer
resumes the same way: `max_steps` may grow, the model and batch may not).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterator, Optional, Tuple

from peft_ray.errors import CheckpointError
from peft_ray.spec.load import shown
from peft_ray.storage import Location
from peft_ray.train.checkpoint import checkpoint_step, latest_good_checkpoint

# Fields a continuation may change: run length, evaluation and checkpoint cadence, failure handling,
# where the data folder and the cluster are. Everything else must equal the run's job.yaml.
MAY_CHANGE = ("name", "output.", "tune", "kernels", "data.root", "train.epochs", "train.max_steps",
              "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints", "train.eval_batch_size",
              "train.early_stopping_patience", "train.max_failures", "train.nan_policy", "train.max_grad_norm",
              "scaling.address", "scaling.cpus_per_worker", "scaling.torch_threads", "scaling.placement_strategy",
              "scaling.use_gpu", "deepspeed.offload")


def _flat(d: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    if isinstance(d, dict) and d:
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], d


def _may_change(field: str) -> bool:
    return any(field == m or (m.endswith(".") and field.startswith(m)) for m in MAY_CHANGE)


def _moved(old: Any, new: Any) -> bool:
    """The same file or folder found at another absolute path: a run resumed from another working
    directory, or `submit --resume` (Ray unpacks the working dir under a new session folder)."""
    return (isinstance(old, str) and isinstance(new, str) and old.startswith("/") and new.startswith("/")
            and PurePosixPath(old).name == PurePosixPath(new).name)


def changed_fields(recorded: Dict[str, Any], now: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """{field: (the run's value, this job's)} for the fields a continuation must keep."""
    old, new = dict(_flat(recorded)), dict(_flat(now))
    return {f: (old.get(f), new.get(f)) for f in sorted(old.keys() | new.keys())
            if not _may_change(f) and old.get(f) != new.get(f) and not _moved(old.get(f), new.get(f))}


def check_same_run(recorded: Dict[str, Any], now: Dict[str, Any], out) -> None:
    """Refuse --resume where this job changes what the run in `out` was trained with (both as job.yaml
    records them), naming every such field, before anything is written there."""
    diff = changed_fields(recorded, now)
    if not diff:
        return
    lines = "; ".join(f"{f} is {shown(new)} here but the run used {shown(old)}" for f, (old, new) in diff.items())
    raise CheckpointError(f"--resume: this job differs from the run in output.dir '{out}': {lines}. Its checkpoints "
                          "hold that run's adapter, optimizer state and data position, so only the run length "
                          "(train.max_steps, train.epochs), evaluation and checkpoint settings and where it runs "
                          "may change. Set those fields back, or start a new run (--overwrite, or another "
                          "output.dir)")


def find_checkpoint(out: Location, local: bool) -> str:
    """The latest good checkpoint of the run in `out`: --local's under checkpoints/, Ray's under ray/.
    A run trained the other way is named as such, not answered with --overwrite."""
    mine, other = ("checkpoints", "ray") if local else ("ray", "checkpoints")
    warn = lambda m: print(f"[peft-ray] {m}")   # noqa: E731
    found = (latest_good_checkpoint(Path(out.path) / mine, warn=warn) if local
             else latest_good_checkpoint((out / mine).uri, warn=warn))
    if found is not None:
        return str(found)
    if any(rel.startswith(f"{other}/") and "checkpoint_" in rel for rel in out.files()):
        how = "without --local (through Ray)" if local else "with --local"
        raise CheckpointError(f"--resume: the run in '{out}' was trained {how}: its checkpoints are under "
                              f"{out / other}, in that path's layout. Resume it the way it was trained")
    raise CheckpointError(f"--resume: no usable checkpoint under {out / mine}; pass --overwrite instead to start "
                          "the run again there, or set output.dir to a new folder")


def finished(out: Location, checkpoint: str, total_steps: int) -> Optional[Dict[str, Any]]:
    """A --resume of a run whose latest checkpoint already reached this job's last step: its recorded
    metrics.json, untouched, after a line saying how to train further. None where steps remain."""
    step = checkpoint_step(checkpoint)
    if step < total_steps:
        return None
    record = out / "metrics.json"
    if not record.exists():
        raise CheckpointError(f"--resume: the run in '{out}' reached step {step} of {total_steps} but wrote no "
                              f"metrics.json. Raise train.max_steps or train.epochs to train further, or export "
                              f"its checkpoint: peft-ray export {checkpoint} OUT")
    print(f"[peft-ray] the run in {out} already reached step {step} of {total_steps}: nothing left to train. "
          "Raise train.max_steps or train.epochs to train further")
    return json.loads(record.read_small_text(10 * 2 ** 20) or "{}")
