"""A search's output.dir: what it holds, whether a search may start there, and the folder itself.

Kept apart from the runner, which imports Ray: the CLI checks the folder before `tune.log` opens
there, and Ray's loggers must first be imported under the terminal router (commands/tune.py).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import yaml

from peft_ray.errors import CheckpointError, JobError
from peft_ray.replaced import check_no_leftover, check_only_run_files, replacing
from peft_ray.security import check_own_pickles
from peft_ray.spec import JobSpec, saved_spec
from peft_ray.spec.load import recorded_mapping, shown
from peft_ray.storage import Location, is_uri, write_file
from peft_ray.train.resume import flat_fields
from peft_ray.train.run_dir import BESIDE_RUN

EXPERIMENT = "tune"            # <output.dir>/tune/: Ray Tune's experiment (pickled state)
TRIALS_DIR = "trials"          # <output.dir>/trials/<trial id>/: the trial's job, checkpoints, Train run
BEST_RUN = "best"              # <output.dir>/best/: best_job.yaml's output.dir (the user's own train run)
# What a search folder holds: its state, results, the best adapter, and best_job.yaml's run (best/),
# and what eval (of the best adapter) and zero-shot write beside them.
SEARCH_FILES = {"job.yaml", "tune.log", "search.json", EXPERIMENT, "leaderboard.json", "leaderboard.csv",
                "curves.png", "best_job.yaml", "adapter", "prescreen.json", BEST_RUN, TRIALS_DIR, *BESIDE_RUN}
# What only a search that Ray Tune took over writes (search_started).
STARTED_BY = {EXPERIMENT, TRIALS_DIR, "leaderboard.json", "leaderboard.csv", "curves.png", "best_job.yaml", "adapter"}


@contextlib.contextmanager
def prepared_dir(spec: JobSpec, resume: bool, overwrite: bool) -> Iterator[Path]:
    """output.dir for the block's search. Never mixes two searches in one folder and never deletes
    without --overwrite; with it, the previous search is set aside and deleted only once the block
    has finished, or put back if it fails (peft_ray/replaced.py)."""
    out = check_can_start_search(spec, resume, overwrite)
    saved = saved_spec(spec)   # secrets redacted, as `train` writes its job.yaml
    if resume and (out / "job.yaml").exists():
        old = recorded_mapping(Location.at(out / "job.yaml"))
        was, now = dict(flat_fields(old)), dict(flat_fields(saved))
        changed = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
        if changed:
            named = "; ".join(f"{k} is {shown(now.get(k))} here but the search used {shown(was.get(k))}"
                              for k in changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise CheckpointError(f"--resume: the job differs from the search in '{out}': {named}. Resume with "
                                  "the same job and overrides, or start a new search (--overwrite, or another output.dir)")
    out.mkdir(parents=True, exist_ok=True)
    with replacing(Location.at(out)) if overwrite else contextlib.nullcontext():
        write_file(out / "job.yaml", yaml.safe_dump(saved, sort_keys=False))
        yield out


def check_can_start_search(spec: JobSpec, resume: bool, overwrite: bool) -> Path:
    """Whether output.dir can take this search, checked before anything is written there (the CLI
    calls it before tune.log opens): the folder, resolved."""
    if is_uri(spec.output.dir):
        raise JobError(f"output.dir '{spec.output.dir}': peft-ray tune writes its search (trials, leaderboard) "
                       "through local paths; set output.dir to a local or shared (NFS) folder. "
                       "`peft-ray train` accepts s3:// and gs://")
    if resume and overwrite:
        raise JobError("--resume continues the search in output.dir and --overwrite replaces it; pass one of them")
    out = Path(spec.output.dir).expanduser().resolve()
    if not overwrite:
        check_no_leftover(Location.at(out))
    check_only_run_files(Location.at(out), SEARCH_FILES, overwrite, "search", beside=BESIDE_RUN)
    if (out / "job.yaml").exists() and not recorded_mapping(Location.at(out / "job.yaml")).get("tune"):
        raise CheckpointError(f"output.dir '{out}' holds a `peft-ray train` run (its job.yaml has no tune: "
                              "section), which a search would write over; set output.dir to a new folder")
    # A search that stopped before Ray Tune's experiment began (Ctrl-C during Ray's start-up, a
    # cluster too small) left only its plan and log: --resume has nothing to continue, so a plain
    # rerun replaces them. Anything more (tune/, whose pickled state a fresh search never reads;
    # trials, results) makes it a search that needs --resume or --overwrite.
    if search_started(out) and not (resume or overwrite):
        raise CheckpointError(f"output.dir '{out}' already holds a search; pass --resume to continue it, "
                              "--overwrite to replace it, or set output.dir to a new folder")
    best_run = out / BEST_RUN
    if overwrite and best_run.is_dir() and any(best_run.iterdir()):
        raise CheckpointError(f"output.dir '{out}': {best_run} holds the run of best_job.yaml (a `peft-ray train` "
                              "of the best trial), which --overwrite would delete with the search; move it out of "
                              "the folder (or delete it yourself) first, or set output.dir to a new folder")
    if resume and not (out / EXPERIMENT).is_dir():
        raise CheckpointError(f"--resume: no search to resume under '{out / EXPERIMENT}'; run without --resume")
    if resume:
        check_own_pickles(out / EXPERIMENT, "--resume")
        if (out / TRIALS_DIR).is_dir():   # their reports rank the trials and name the adapter exported
            check_own_pickles(out / TRIALS_DIR, "--resume", "a trial's reports there decide the leaderboard and "
                              "which checkpoint's adapter is exported")
    return out


def search_started(out: Path) -> bool:
    """Whether output.dir holds a search that got further than its plan (see check_can_start_search):
    what Ray Tune or the trials wrote, or a run of best_job.yaml. What zero-shot and eval write beside
    (zero_shot.json: the baseline a user scores before searching) and an empty best/ are not a search."""
    best = out / BEST_RUN
    return (any((out / name).exists() or (out / name).is_symlink() for name in STARTED_BY)
            or (best.is_dir() and any(best.iterdir())))
