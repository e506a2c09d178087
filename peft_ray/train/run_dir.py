"""output.dir as a run folder: what may start there (a new run, --resume, --overwrite), and the
names a run's folder holds."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Dict, Iterator

import yaml

from peft_ray.data.fingerprint import RECORD, fingerprint
from peft_ray.errors import CheckpointError, JobError
from peft_ray.replaced import LOGS, check_no_leftover, check_only_run_files, replacing
from peft_ray.spec import JobSpec, saved_spec
from peft_ray.spec.load import MAX_YAML_BYTES, recorded_mapping
from peft_ray.storage import Location, check_output_dir, is_uri
from peft_ray.train.checkpoint import _checkpoint_names
from peft_ray.train.resume import (check_checkpoint_fits, check_layout, check_same_data, check_same_run,
                                   find_checkpoint, finished, note_data_changes, unread_fields)


@contextlib.contextmanager
def prepared_output_dir(spec: JobSpec, resume: bool, overwrite: bool, local: bool = False,
                        pre=None) -> Iterator[Location]:
    """output.dir for the block's run. Refuses to mix two different jobs in one folder and never
    deletes without --overwrite; with it, the previous run is set aside and deleted only once the
    block has finished, or put back if it fails (peft_ray/replaced.py). output.dir is a local path
    or a URI (s3://, gs://, file://): both go through pyarrow.fs."""
    out = Location.at(spec.output.dir)
    check_can_start(spec, resume, overwrite, local)
    out.mkdir()
    with replacing(out) if overwrite else contextlib.nullcontext(), record_kept_unless_saved(out, resume):
        (out / "job.yaml").write_text(yaml.safe_dump(saved_spec(spec), sort_keys=False))
        if pre is not None:    # what --resume compares the data with (resume.check_same_data)
            (out / RECORD).write_text(json.dumps(data_fingerprints(spec, pre), indent=1))
        yield out


@contextlib.contextmanager
def record_kept_unless_saved(out: Location, resume: bool) -> Iterator[None]:
    """A --resume that fails before it saves a checkpoint of its own (its checkpoint refused as the
    workers load it: another job's, another worker count; a Ctrl-C while the model loads) puts
    back the run's job.yaml: the folder still holds that run's checkpoints and outputs, which the
    new job (max_steps: 3 over a 2-step run) would have misdescribed. Once the resume has saved,
    the folder's newest checkpoint is this job's, and so is the record."""
    if not resume:
        yield
        return
    job_file = out / "job.yaml"
    recorded, before = job_file.read_small_text(MAX_YAML_BYTES), saved_checkpoints(out)
    try:
        yield
    except BaseException:
        if recorded is not None and saved_checkpoints(out) <= before:
            try:
                job_file.write_text(recorded)
            except Exception as e:   # noqa: BLE001 - the run's own error is the one to raise
                print(f"[peft-ray] warning: could not put back {job_file} after the failed --resume: {e}")
        raise


def saved_checkpoints(out: Location) -> set:
    """The checkpoint folders a run in `out` holds (Ray's under ray/, --local's under checkpoints/)."""
    return _checkpoint_names([rel for rel in out.files() if rel.startswith(("ray/", "checkpoints/"))])


def check_job_file_kept(job_file, output_dir: str) -> None:
    """The job file is not output.dir/job.yaml of a folder no run has written to (no train.log or
    tune.log beside it): a run writes its resolved job there, and --overwrite sets the folder's
    files aside and deletes them, so `exp1/job.yaml` with `output.dir: exp1` lost the user's own
    job (its comments, and an override made permanent). A run folder's own job.yaml, given back
    to continue the run (`train runs/x/job.yaml --resume`), is peft-ray's file and may be."""
    from pathlib import Path

    if job_file is None or is_uri(output_dir):
        return
    out = Path(output_dir).expanduser().resolve()
    if Path(job_file).resolve() == out / "job.yaml" and not any((out / log).exists() for log in LOGS):
        raise JobError(f"the job file '{job_file}' is output.dir/job.yaml, where a run writes its resolved job "
                       "(and --overwrite would delete it). Keep the job file outside output.dir (e.g. in jobs/), "
                       f"or set output.dir to another folder (output.dir='{out / 'run'}')")


def check_local_output(output_dir: str) -> None:
    """--local writes through local paths only: a URI is refused before anything opens it."""
    if is_uri(output_dir):
        raise JobError(f"output.dir '{output_dir}': --local writes its checkpoints through local paths; "
                       "set output.dir to a local folder for --local, or run without --local (Ray Train "
                       "writes URIs such as s3:// and gs:// through pyarrow)")


def check_can_start(spec: JobSpec, resume: bool, overwrite: bool, local: bool = False) -> None:
    """Whether output.dir can take this run, checked before anything is written there (the CLI calls
    it before train.log opens). A folder holding a run is never taken without --resume or
    --overwrite; one whose run stopped before its first checkpoint says to pass --overwrite (the
    answer to both a plain start and --resume there)."""
    check_output_dir(spec.output.dir)
    if local:
        check_local_output(spec.output.dir)
    out = Location.of_output(spec.output.dir)
    job_file = out / "job.yaml"
    if resume and overwrite:
        raise JobError("--resume continues the run in output.dir and --overwrite replaces it; pass one of them")
    if not overwrite:
        check_no_leftover(out)
    check_only_run_files(out, RUN_FILES, overwrite, "run", beside=BESIDE_RUN)
    if resume and not job_file.exists():   # said before a train.log is made in a folder with no run
        raise CheckpointError(f"--resume: output.dir '{out}' holds no run to continue (no job.yaml); start it "
                              "without --resume, or point output.dir at the run's folder")
    if not job_file.exists() or overwrite:
        return
    old = recorded_job(job_file)
    same_job = old.get("name") == spec.name and old.get("method", {}).get("name") == spec.method.name
    if same_job and never_saved(out):
        raise CheckpointError(f"output.dir '{out}' holds a run of this job that stopped before its first checkpoint, "
                              f"so there is nothing to {'resume' if resume else 'keep'}: pass --overwrite to start "
                              "it again there, or set output.dir to a new folder")
    if not resume:
        raise CheckpointError(f"output.dir '{out}' already holds a run; pass --resume to continue it, "
                              "--overwrite to replace it, or set output.dir to a new folder")
    if not old:
        raise CheckpointError(f"--resume: output.dir '{out}' holds a job.yaml that is not a peft-ray job, so it "
                              "holds no run to continue; set output.dir to the run's folder")
    # another method (or anything else a continuation must keep) is named field by field there, and a
    # new `name` may change (it read "holds job 'default' (prompt_tuning); it cannot resume 'default'")
    check_layout(out, local)             # a run trained the other way says so first
    check_same_run(recorded_mapping(job_file), saved_spec(spec), out, unread_fields(spec))


def recorded_job(job_file: Location) -> Dict[str, Any]:
    """The job.yaml a run wrote, as far as check_can_start reads it ({} where it is not a job)."""
    old = recorded_mapping(job_file)
    if not old:
        return {}
    method = old.get("method")
    return {"name": old.get("name"), "method": method if isinstance(method, dict) else {"name": method}}


# What a run writes before its first checkpoint.
EARLY_RUN_FILES = {"job.yaml", RECORD, "train.log", "metrics.jsonl", "tensorboard", "ray", "checkpoints", "curves.png"}
# What `eval` and `zero-shot` write into a run folder (or into output.dir before any run).
BESIDE_RUN = {"zero_shot.json", "eval_*.json", "eval_*.log"}
# Everything a run folder holds: the run's own outputs and what those commands write beside them.
RUN_FILES = EARLY_RUN_FILES | BESIDE_RUN | {"adapter", "adapter_last", "metrics.json"}


def never_saved(out: Location) -> bool:
    """The folder holds only what a run writes before its first checkpoint: no checkpoint (Ray's
    under ray/, --local's under checkpoints/), adapter or metrics.json, and no file of anyone else's."""
    files = out.files()
    return (all(rel.split("/", 1)[0] in EARLY_RUN_FILES for rel in files)
            and not any("checkpoint_" in rel for rel in files if rel.startswith(("ray/", "checkpoints/"))))


def data_fingerprints(spec: JobSpec, pre) -> Dict[str, Any]:
    """{split field: fingerprint of its files} of the pre-flight's splits (data/fingerprint.py),
    made once a run. A built-in data set is none: data.root names it and its version, and another
    node's pyarrow writes the same rows with other footer bytes."""
    if pre.data_files is None:
        splits = {"data.train": pre.train, "data.validation": pre.validation}
        builtin = str(spec.data.root or "").startswith("builtin:")
        pre.data_files = {} if builtin else {field: fingerprint(facts.files) for field, facts in splits.items()
                                              if facts is not None}
    return pre.data_files


def resumed_from(spec: JobSpec, pre, resume: bool, overwrite: bool, local: bool):
    """(the checkpoint --resume continues, or None; a Finished run with nothing left to train, or
    None), decided before output.dir is written to."""
    if not resume:
        return None, None
    check_can_start(spec, resume, overwrite, local)
    out = Location.at(spec.output.dir)
    checkpoint = find_checkpoint(out, local)
    check_checkpoint_fits(checkpoint, spec, local)
    check_same_data(out, data_fingerprints(spec, pre))
    note_data_changes(checkpoint, spec, pre.train.usable if pre.train else 0)
    return checkpoint, finished(out, checkpoint, pre.total_steps, spec.train.early_stopping_patience)
