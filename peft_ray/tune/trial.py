"""One trial = one `peft-ray train` run of the trial's job spec, started by a Ray Tune function.

Every trial runs the same pre-flight and the same recipe (``train.recipe.train_func``: model,
DeepSpeed engine, loop, evaluation, checksummed checkpoints, adapter). How it is hosted depends
on ``scaling.num_workers``:

- **several workers**: the Ray 2.60 pattern. The Tune function drives a TorchTrainer
  (``driver.make_trainer``: Ray Data pipelines + Train workers) whose ``TuneReportCallback``
  forwards every report (metrics + checkpoint path) to Tune;
- **one worker**: the recipe runs inside the Tune trial actor (single-rank process group,
  pyarrow data, ``TuneReporter``), as `peft-ray train --local` runs it. Why: a TorchTrainer
  adds a controller, a worker actor and a Ray Data executor per trial (measured here: ~60 s of a
  4-step tiny-model trial on 2 cores). And when ASHA stops a TorchTrainer trial, Ray 2.60 leaves
  its worker placement group behind until its PlacementGroupCleaner notices; that cleaner
  finds the cluster through the state API, which fails when several local Ray instances run on
  one machine, and Train's Ray Data reservation outlives the stopped trial for up to 180 s. An
  in-process trial gives everything back when its actor stops. ``PlacementGroupJanitor``
  covers the placement groups of stopped multi-worker trials.

Resource plan (why the numbers): the local head peft-ray starts has ``os.cpu_count() + 1``
logical CPUs, the extra one for Ray Data's tokenize tasks; keeping one free of trials stops
concurrent trials from starving each other's data pipelines (and keeps in-process trials at one
per core). A trial holds ``workers x cpus_per_worker`` CPUs, plus ``tune.trial_cpus`` for the
function that drives a TorchTrainer. So at most ``(cluster CPUs - 1) // per-trial CPUs`` trials
run at once (and no more than the GPUs allow).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from ray.tune import Callback

from peft_ray.spec import JobSpec, saved_spec, validate_spec
from peft_ray.storage import write_file
from peft_ray.tune.report import TRIAL_FILE
from peft_ray.train.runlog import tagged
from peft_ray.tune.fit import trials_at_once
from peft_ray.tune.folder import TRIALS_DIR
from peft_ray.tune.space import SearchSpace
from peft_ray.spec.tune import TuneSpec

PG_FILE = "placement_group"    # multi-worker trials: the Train workers' placement group id


@dataclass(frozen=True)
class ResourcePlan:
    cluster_cpus: float
    cluster_gpus: float
    data_cpus: float          # kept free for Ray Data
    per_trial_cpus: float     # the largest trial: workers x cpus_per_worker (+ its driver function)
    max_concurrent: int

    def describe(self) -> str:
        # Ray's logical CPUs: an in-process Ray has the machine's cores + one slot for Ray Data's light tasks
        return (f"{self.max_concurrent} trial(s) at once: {self.cluster_cpus:g} Ray CPU slots, "
                f"{self.data_cpus:g} kept for Ray Data, {self.per_trial_cpus:g} per trial")


def plan_resources(specs: List[JobSpec], t: TuneSpec, data_cpus: float) -> ResourcePlan:
    """How many trials fit at once in the running Ray; a message (not a hang) when not even one fits."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    per_trial, fit = trials_at_once(specs, t, cpus, gpus, data_cpus)
    if t.max_concurrent_trials and t.max_concurrent_trials > fit:
        print(f"[peft-ray] tune.max_concurrent_trials={t.max_concurrent_trials} does not fit the cluster; "
              f"running {fit} at once")
    return ResourcePlan(cpus, gpus, data_cpus, per_trial, max(1, min(fit, t.max_concurrent_trials or fit)))


class TrialResources:
    """Tune's resource request per trial (a callable of the trial config, so it pickles)."""

    def __init__(self, space: SearchSpace, trials: Optional[List[Dict[str, Any]]], t: TuneSpec):
        self.space, self.trials, self.tune = space, trials, t

    def __call__(self, config: Dict[str, Any]):
        from ray.tune import PlacementGroupFactory

        s = validate_spec(self.space.trial_raw(assignment_of(config, self.trials)))
        if s.scaling.num_workers == 1:  # the trial actor is the worker
            bundle = {"CPU": s.scaling.cpus_per_worker, "GPU": 1.0 if s.scaling.use_gpu else 0.0}
        else:  # Tune refuses an all-zero request; 1 byte of memory reserves nothing real
            bundle = {"CPU": self.tune.trial_cpus, "memory": 0 if self.tune.trial_cpus else 1}
        return PlacementGroupFactory([{k: v for k, v in bundle.items() if v}])


def assignment_of(config: Dict[str, Any], trials: Optional[List[Dict[str, Any]]]) -> Dict[str, Any]:
    """grid/random configs are {"candidate": i}; optuna's are the assignment itself."""
    return dict(trials[config["candidate"]]) if "candidate" in config else dict(config)


def trial_spec(space: SearchSpace, assignment: Dict[str, Any], trial_dir: Path) -> JobSpec:
    raw = space.trial_raw(assignment)
    raw["output"]["dir"] = str(trial_dir)
    return validate_spec(raw)


def run_trial(config: Dict[str, Any], space: SearchSpace, trials: Optional[List[Dict[str, Any]]],
              out_dir: str, metric: str, mode: str) -> None:
    """The Tune function: the trial's job through the `peft-ray train` path."""
    import ray.tune

    from peft_ray.preflight import run_preflight

    trial_id = ray.tune.get_context().get_trial_id()
    trial_dir = Path(out_dir) / TRIALS_DIR / trial_id
    assignment = assignment_of(config, trials)
    spec = trial_spec(space, assignment, trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    write_file(trial_dir / TRIAL_FILE, json.dumps(
        {"trial_id": trial_id, "assignment": assignment, "metric": metric, "mode": mode, "started": time.time()},
        indent=1))
    write_file(trial_dir / "job.yaml", yaml.safe_dump(saved_spec(spec), sort_keys=False))
    pre = run_preflight(spec)
    if spec.scaling.num_workers == 1:
        run_in_process(spec, pre, trial_dir)
    else:
        run_torch_trainer(spec, pre, trial_dir, metric, mode)


def trial_tag(trial_dir: Path) -> str:
    """RunFacts.log_tag of the trial in `trial_dir`: every line it prints says whose it is."""
    return f"trial {trial_dir.name}"


def trial_warning(trial_dir: Path):
    """Where a trial's checkpoint warnings go: a line tagged like the trial's others."""
    return lambda m: print(f"[peft-ray] {tagged(trial_tag(trial_dir), m)}")


def run_in_process(spec: JobSpec, pre, trial_dir: Path) -> None:
    """The recipe in this actor: one rank, pyarrow data, TuneReporter (resumes its own checkpoints)."""
    from peft_ray.train.checkpoint import latest_good_checkpoint
    from peft_ray.train.local import run_in_process as run_recipe_here
    from peft_ray.tune.report import TuneReporter

    resume_from = latest_good_checkpoint(trial_dir / "checkpoints", warn=trial_warning(trial_dir))
    resume = str(resume_from) if resume_from else None
    run_recipe_here(spec, pre, TuneReporter(spec.output.dir, spec.train.keep_checkpoints, resume), resume_from=resume,
                    log_tag=trial_tag(trial_dir))


def run_torch_trainer(spec: JobSpec, pre, trial_dir: Path, metric: str, mode: str) -> None:
    """A TorchTrainer driven from this function (Ray 2.60: no Tuner(trainer))."""
    import ray.train
    from ray.tune.integration.ray_train import TuneReportCallback

    from peft_ray.train.checkpoint import latest_good_checkpoint
    from peft_ray.train.driver import make_trainer, worker_job_error

    run_config = ray.train.RunConfig(
        # A stable name (no timestamp): a restarted trial finds its own checkpoints.
        name=trial_dir.name, storage_path=str(trial_dir.parent), callbacks=[TuneReportCallback()],
        failure_config=ray.train.FailureConfig(max_failures=spec.train.max_failures),
        # Keep the best checkpoints by the tune metric (the leaderboard exports the best one's
        # adapter); Ray always keeps the latest too, which a restarted trial continues from.
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=spec.train.keep_checkpoints,
                                                     checkpoint_score_attribute=metric, checkpoint_score_order=mode))
    resume_from = latest_good_checkpoint(trial_dir, warn=trial_warning(trial_dir))
    trainer = make_trainer(spec, pre, trial_dir.parent, resume_from, run_config=run_config,
                           train_fn=train_func_noting_placement_group, log_tag=trial_tag(trial_dir))
    try:
        result = trainer.fit()
    except Exception as e:
        own = worker_job_error(e)     # the trial's error as the job's own words, not Ray's wrapper
        if own is not None:
            raise own from None
        raise
    if result.error:
        raise result.error


def train_func_noting_placement_group(config: Dict[str, Any]):
    """Rank 0 notes its worker group's placement group (see PlacementGroupJanitor), then trains."""
    import ray.train
    from ray.util import get_current_placement_group

    from peft_ray.train.recipe import train_func

    pg = get_current_placement_group()
    if pg is not None and ray.train.get_context().get_world_rank() == 0:
        write_file(Path(config["spec"]["output"]["dir"]) / PG_FILE, pg.id.hex())
    return train_func(config)


class PlacementGroupJanitor(Callback):
    """Removes a finished multi-worker trial's Train placement group.

    A trial stopped by ASHA dies with its TorchTrainer controller, and a placement group made by
    an actor outlives it while the job runs; Ray's own cleaner cannot always reach the cluster.
    Removing an already-removed group is a no-op, so finished trials are safe too.
    """

    def __init__(self, out: str):
        self.out = out

    def on_trial_complete(self, iteration, trials, trial, **info):
        remove_trial_placement_group(Path(self.out) / TRIALS_DIR / trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        remove_trial_placement_group(Path(self.out) / TRIALS_DIR / trial.trial_id)


def remove_trial_placement_group(trial_dir: Path) -> None:
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    f = trial_dir / PG_FILE
    if not f.exists():
        return
    try:
        remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(f.read_text().strip()))))
    except Exception as e:  # already gone, or the cluster is shutting down
        print(f"[peft-ray] note: placement group of {trial_dir.name}: {e}")
    f.unlink(missing_ok=True)
