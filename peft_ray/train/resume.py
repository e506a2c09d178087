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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterator, Optional, Tuple

from peft_ray.errors import CheckpointError
from peft_ray.spec import saved_spec
from peft_ray.spec.load import shown
from peft_ray.storage import Location
from peft_ray.train.checkpoint import latest_good_checkpoint, read_report, read_state
from peft_ray.train import local_ranks

# Fields a continuation may change: run length, evaluation and checkpoint cadence, failure handling,
# where the data folder and the cluster are. Everything else must equal the run's job.yaml.
MAY_CHANGE = ("name", "output.", "tune", "kernels", "data.root", "train.epochs", "train.max_steps",
              "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints", "train.eval_batch_size",
              "train.early_stopping_patience", "train.max_failures", "train.nan_policy", "train.max_grad_norm",
              "scaling.address", "scaling.cpus_per_worker", "scaling.torch_threads", "scaling.placement_strategy",
              "scaling.use_gpu", "deepspeed.offload")


def flat_fields(d: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """(dotted field, value) for every leaf of a job mapping: `train.lr`, `method.r`."""
    if isinstance(d, dict) and d:
        for k, v in d.items():
            yield from flat_fields(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], d


def _may_change(field: str) -> bool:
    return any(field == m or (m.endswith(".") and field.startswith(m)) for m in MAY_CHANGE)


def _moved(old: Any, new: Any) -> bool:
    """The same file or folder found at another absolute path: a run resumed from another working
    directory, or `submit --resume` (Ray unpacks the working dir under a new session folder)."""
    return (isinstance(old, str) and isinstance(new, str) and old.startswith("/") and new.startswith("/")
            and PurePosixPath(old).name == PurePosixPath(new).name)


def _data_files(flat: Dict[str, Any]) -> Dict[str, Any]:
    """data.train/validation as the paths they name: a name under data.root joined to it, so that
    `train.parquet` under /d and `/d/train.parquet` are one file, and a moved root moves its files."""
    root = flat.get("data.root")
    out = dict(flat)
    for f in ("data.train", "data.validation"):
        v = flat.get(f)
        if isinstance(v, str) and isinstance(root, str) and root.startswith("/") and not v.startswith("/"):
            out[f] = str(PurePosixPath(root) / v)
    return out


def changed_fields(recorded: Dict[str, Any], now: Dict[str, Any], ignore: Tuple[str, ...] = ()) -> Dict[str, Tuple[Any, Any]]:
    """{field: (the run's value, this job's)} for the fields a continuation must keep; `ignore`:
    prefixes of fields this job does not read (a verbalizer under a trained head)."""
    old, new = _data_files(dict(flat_fields(recorded))), _data_files(dict(flat_fields(now)))
    if old.get("data.validation") is not None and new.get("data.validation") is not None:
        ignore = (*ignore, "data.validation_fraction")   # never read beside a validation file (a run of before
        # that was refused let it pass unread, and dropping it now must not end that run)
    return {f: (old.get(f), new.get(f)) for f in sorted(old.keys() | new.keys())
            if not _may_change(f) and not f.startswith(ignore) and old.get(f) != new.get(f)
            and not _moved(old.get(f), new.get(f))}


def check_same_run(recorded: Dict[str, Any], now: Dict[str, Any], out, ignore: Tuple[str, ...] = ()) -> None:
    """Refuse --resume where this job changes what the run in `out` was trained with (both as job.yaml
    records them), naming every such field, before anything is written there."""
    diff = changed_fields(recorded, now, ignore)
    if not diff:
        return
    if "method.name" in diff:    # another method: its own fields differ by construction, the name says it
        diff = {f: v for f, v in diff.items() if f == "method.name" or not f.startswith("method.")}
    lines = "; ".join(f"{f} is {shown(new)} here but the run used {shown(old)}" for f, (old, new) in diff.items())
    roots = ((recorded.get("data") or {}).get("root"), (now.get("data") or {}).get("root"))
    if roots[0] != roots[1] and any(f in diff for f in ("data.train", "data.validation")):
        # the files' names alone hide that the folder changed: say which folder the run read
        lines += f" (the run read its files under data.root {shown(roots[0])}, this job under {shown(roots[1])})"
    raise CheckpointError(f"--resume: this job differs from the run in output.dir '{out}': {lines}. Its checkpoints "
                          "hold that run's adapter, optimizer state and data position, so only the run length "
                          "(train.max_steps, train.epochs), evaluation and checkpoint settings and where it runs "
                          "may change. Set those fields back, or start a new run (--overwrite, or another "
                          "output.dir)")


def _has_checkpoints(names, folder: str) -> bool:
    return any(rel.startswith(f"{folder}/") and "checkpoint_" in rel for rel in names)


def check_layout(out: Location, local: bool) -> None:
    """A run trained the other way (--local or through Ray) is named as such, from the names alone:
    its checkpoints sit in the other path's folder and layout."""
    mine, other = ("checkpoints", "ray") if local else ("ray", "checkpoints")
    names = out.files()
    if not _has_checkpoints(names, mine) and _has_checkpoints(names, other):
        how = "without --local (through Ray)" if local else "with --local"
        raise CheckpointError(f"--resume: the run in '{out}' was trained {how}: its checkpoints are under "
                              f"{out / other}, in that path's layout. Resume it the way it was trained")


def find_checkpoint(out: Location, local: bool) -> str:
    """The latest good checkpoint of the run in `out`: --local's under checkpoints/, Ray's under ray/."""
    check_layout(out, local)
    warn = lambda m: print(f"[peft-ray] {m}")   # noqa: E731
    found = (latest_good_checkpoint(Path(out.path) / "checkpoints", warn=warn) if local
             else latest_good_checkpoint((out / "ray").uri, warn=warn))
    if found is None:
        mine = "checkpoints" if local else "ray"
        raise CheckpointError(f"--resume: no usable checkpoint under {out / mine}; pass --overwrite instead to "
                              "start the run again there, or set output.dir to a new folder")
    return str(found)


# The fields that shape the tensors a checkpoint holds: another value there cannot load (a prompt of
# 10 tokens into one of 20, another r, a head for other labels).
SHAPING = ("method.", "model.", "task.")


def check_checkpoint_fits(checkpoint: str, spec, local: bool) -> None:
    """Refuse, before any model is built or anything written, a checkpoint this job cannot load: one
    written by another number of workers (its ZeRO shards are per rank), or by a job with other
    method, model or task fields, as its adapter/peft_ray.json records that job (a checkpoint copied
    from another run; job.yaml beside it may say otherwise)."""
    state = read_state(checkpoint)
    workers = spec.scaling.num_workers   # --local: its ranks (train/local.local_spec)
    if state is not None and state.world_size != workers:
        n_cores = local_ranks.cores()
        if local and state.world_size > n_cores:
            how = (f"resume it without --local (through Ray; this machine has {n_cores} core(s) for --local's "
                   "ranks) with scaling.num_workers")
        else:
            how = f"resume it with scaling.{'local_ranks' if local else 'num_workers'}"
        raise CheckpointError(f"--resume: checkpoint {checkpoint} was written by {state.world_size} worker(s) and "
                              f"this run has {workers} (ZeRO shards are per rank); {how}={state.world_size}")
    diff = _changed_shape(_checkpoint_job(checkpoint), dict(flat_fields(saved_spec(spec))))
    if diff:
        lines = "; ".join(f"{f} is {shown(new)} here but that job used {shown(old)}" for f, (old, new) in diff.items())
        raise CheckpointError(f"--resume: checkpoint {checkpoint} was written by a job with other fields ({lines}; "
                              "from its adapter/peft_ray.json), so its adapter and optimizer state do not fit this "
                              "job. Resume it with the job that wrote it, or start afresh with --overwrite or "
                              "another output.dir")


def _checkpoint_job(checkpoint: str) -> Dict[str, Any]:
    """The flat job a checkpoint's adapter/peft_ray.json records ({} where it records none: a
    checkpoint of an older peft-ray, or a file that is not a job)."""
    from peft_ray.train.checkpoint_check import read_json

    path = Location.at(checkpoint) / "adapter" / "peft_ray.json"
    try:
        recorded = read_json(path).get("spec")
    except (OSError, ValueError, RecursionError, AttributeError):
        return {}
    return dict(flat_fields(recorded)) if isinstance(recorded, dict) else {}


def _changed_shape(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """SHAPING fields both jobs set and set differently: a field one peft-ray version lacks is no
    difference (its default was the other's value), nor a file found at another path."""
    return {f: (old[f], new[f]) for f in sorted(old.keys() & new.keys())
            if f.startswith(SHAPING) and old[f] != new[f] and not _moved(old[f], new[f])}


def data_changes(checkpoint: str, spec, train_rows: int):
    """What reads differently, for this run, since the peft-ray that wrote `checkpoint` (its
    trainer_state.json's data_version against checkpoint_check.DATA_VERSION): a list of sentences,
    empty where nothing this run does moved. `train_rows`: the rows training keeps (pre-flight)."""
    from peft_ray.tasks import get_task
    from peft_ray.train.checkpoint_check import DATA_VERSION
    from peft_ray.train.data_iter import IN_MEMORY_ROWS

    state = read_state(checkpoint)
    if state is None or state.data_version == DATA_VERSION:
        return []
    if state.data_version > DATA_VERSION:
        return [f"it was written by a newer peft-ray (data version {state.data_version}, this one reads "
                f"{DATA_VERSION}), which may order or cut rows otherwise"]
    changes = []
    shard = train_rows // spec.scaling.num_workers   # --local: its ranks (train/local.local_spec)
    if state.micro_in_epoch and shard > IN_MEMORY_ROWS:
        changes.append(f"a worker's shard of over {IN_MEMORY_ROWS:,} rows (here {shard:,}) is now permuted whole "
                       f"every epoch, where the older one read it in file order, so the rest of epoch "
                       f"{state.epoch} repeats some rows that checkpoint had already trained on and skips others")
    step_rows = spec.micro_batch_size * spec.train.grad_accum
    if state.data_version < 2 and state.micro_in_epoch and shard % step_rows:
        changes.append(f"the last rows of an epoch short of a whole step ({shard % step_rows} of this worker's "
                       f"{shard:,}) are now set apart after the shuffle, so the last window of epoch {state.epoch} "
                       "is shuffled otherwise and may repeat or skip some of its rows")
    if state.truncated and get_task(spec.task.type).fits_columns:
        changes.append(f"a row longer than model.max_length ({int(state.truncated):,} were cut in the first epoch) "
                       "may now be cut otherwise: the end of its input columns goes first, the template's words "
                       "after them stay")
    return changes


MAX_RECORD_BYTES = 4 << 20   # data_files.json: a few hundred bytes a file


def check_same_data(out: Location, now: Dict[str, Any]) -> None:
    """Refuse a --resume whose data files are not the ones the run read (its data_files.json):
    data.root may move, but other files under the same names would take the checkpoint's data
    position into another data set. A run that recorded none (an older peft-ray) is not checked."""
    from peft_ray.data.fingerprint import RECORD, difference

    text = (out / RECORD).read_small_text(MAX_RECORD_BYTES)     # None where there is none
    try:
        recorded = json.loads(text) if text else {}
    except ValueError:
        recorded = {}
    why = difference(recorded, now)
    if why:
        raise CheckpointError(f"--resume: {why}. The run's checkpoints hold its position in the data it read, "
                              "so a continuation must read the same files: point data.root back at them, or "
                              "start a new run (--overwrite, or another output.dir)")


def note_data_changes(checkpoint: str, spec, train_rows: int) -> None:
    """Say, before resuming, what an older checkpoint's continuation reads differently; the run goes
    on (the adapter and optimizer state load as they are, and nothing earlier is rewritten)."""
    for change in data_changes(checkpoint, spec, train_rows):
        print(f"[peft-ray] warning: --resume from {checkpoint}, written by an earlier peft-ray: {change}. The run "
              "goes on; for the continuation that version would have trained, resume with it")


@dataclass(frozen=True)
class Finished:
    """A --resume of a run with nothing left to train."""

    metrics: Dict[str, Any]   # its metrics.json, or (recorded False) its last checkpoint's report
    recorded: bool            # True: metrics.json is there and stays as it is


def finished(out: Location, checkpoint: str, total_steps: int, patience=None) -> Optional[Finished]:
    """A --resume of a run with nothing left to train: its latest checkpoint reached this job's last
    step, or early stopping had stopped it (`patience` evaluations without a better one). Its recorded
    metrics.json, untouched, after a line saying how to train further; where the run was stopped
    after that checkpoint but before it wrote its outputs (a Ctrl-C or a kill in between), the
    checkpoint's report, to write them from. None where steps remain."""
    state = read_state(checkpoint)
    step = state.global_step if state else 0
    stopped = bool(state and patience is not None and state.evals_since_best >= patience)
    if step < total_steps and not stopped:
        return None
    record = out / "metrics.json"
    why = (f"stopped early at step {step} ({state.evals_since_best} evaluations without a better one)" if stopped
           else f"already reached step {step} of {total_steps}")
    more = ("raise train.early_stopping_patience (or drop it)" if stopped
            else "raise train.max_steps or train.epochs")
    if record.exists():
        print(f"[peft-ray] the run in {out} {why}: nothing left to train. To train further, {more}")
        return Finished(json.loads(record.read_small_text(10 * 2 ** 20) or "{}"), recorded=True)
    report = read_report(checkpoint)
    if report is None or report.get("step") != step:   # a checkpoint written before report.json was kept
        raise CheckpointError(f"--resume: the run in '{out}' {why} but wrote no metrics.json. To train further, "
                              f"{more}; or export its checkpoint: peft-ray export {checkpoint} OUT")
    print(f"[peft-ray] the run in {out} {why} but stopped before writing its outputs; writing adapter/ and "
          f"metrics.json from its last checkpoint {checkpoint}")
    return Finished(report, recorded=False)


def unread_fields(spec) -> Tuple[str, ...]:
    """Fields of `spec` that training does not read, so a resume may differ in them: the verbalizer,
    where the model scores through a head training creates (a classifier's or NER's head)."""
    from peft_ray.models import lm_kind, resolve_model_path
    from peft_ray.tasks import get_task

    try:
        kind = lm_kind(resolve_model_path(spec.model.name_or_path), spec.model.trust_remote_code)
    except Exception:   # noqa: BLE001 - an unreadable model is train's own error to report; compare everything
        return ()
    return ("template.verbalizer",) if get_task(spec.task.type).trains_new_head(spec.task, kind) else ()
