"""run_tune: check everything, pre-screen, start Ray, run (or resume) the search, write outputs.

    output.dir/
      job.yaml            the tune job, resolved
      search.json         the templates in play and the trials drawn (what --resume reruns)
      prescreen.json      zero-shot template scores (tune.prescreen)
      leaderboard.csv/.json, curves.png
      adapter/            the best trial's adapter (HF PEFT layout)
      best_job.yaml       the best trial as a ready-to-run `peft-ray train` job
      tune/               Ray Tune's experiment (Tuner.restore reads it)
      trials/<trial id>/  each trial's Ray Train run and checkpoints
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from peft_ray.errors import JobError, SpecError
from peft_ray.spec import JobSpec
from peft_ray.storage import write_file
from peft_ray.tune import space as S
from peft_ray.spec.tune import TuneSpec
from peft_ray.tune.folder import EXPERIMENT, prepared_dir
from peft_ray.tune.history import ResumableASHA, TrialRecorder
from peft_ray.tune.state import SEARCH_STATE, read_state
from peft_ray.tune.fit import check_fits_here
from peft_ray.tune.trial import PlacementGroupJanitor, TrialResources, plan_resources, run_trial


def check_search(spec: JobSpec, resume: bool = False) -> S.SearchSpace:
    """Everything that needs no data: keys, metric, each candidate on its own (fails fast)."""
    space = S.SearchSpace.from_spec(spec)
    S.check_keys(space)
    S.check_method_bases(spec, resume)
    S.check_metric(spec)
    if not resume:
        S.check_metric_for_best(spec)
    S.check_each_candidate(space)
    make_search(spec.tune)  # optuna must be installed before anything starts
    return space


def check_schedule(specs: List[JobSpec], totals: List[int], t: TuneSpec) -> None:
    if t.scheduler.name != "asha":
        return
    for s, total in zip(specs, totals):
        if not s.train.eval_every or s.train.eval_every >= total:
            raise SpecError(f"tune.scheduler: ASHA stops trials at their evaluations, but train.eval_every="
                            f"{s.train.eval_every} gives none before the last of {total} steps; set "
                            "train.eval_every lower (or tune.scheduler.name: fifo)")
        if s.train.checkpoint_every and s.train.checkpoint_every % s.train.eval_every:
            raise SpecError("train.checkpoint_every must be a multiple of train.eval_every under tune (every "
                            "checkpoint then carries the metric trials are ranked by), or unset")
        if t.scheduler.grace_period > total:
            raise SpecError(f"tune.scheduler.grace_period={t.scheduler.grace_period} is more than a trial's "
                            f"{total} steps; lower it")


def preflight_templates(space: S.SearchSpace) -> Dict[str, int]:
    """Pre-flight (files, columns, labels, model) once per template, and the model-side checks once
    per searched method and model, before anything is written: usable train rows per template.
    Errors name the candidate (tune.template.text[i], tune.space.method.name[k], ...)."""
    from peft_ray.preflight import run_preflight
    from peft_ray.preflight.model import check_model_and_method
    from peft_ray.spec import validate_spec

    usable: Dict[str, int] = {}
    for i in space.template_ids:
        try:
            usable[space.templates[i]] = run_preflight(validate_spec(space.trial_raw({"template": i}))).train.usable
        except JobError as e:
            raise type(e)(f"tune.template.text[{i}]: {e}") from None
    # every searched method on every searched model: target modules, the task's fit, the weights
    dims = [(key, list(enumerate(space.dims[key].values)) if key in space.dims else [(None, None)])
            for key in ("method.name", "model.name_or_path")]
    for k_method, method in dims[0][1]:
        for k_model, model in dims[1][1]:
            if k_method is None and k_model is None:
                continue    # the job's own method and model: checked with each template above
            assignment = {key: v for (key, _), v in zip(dims, (method, model)) if v is not None}
            where = ", ".join(f"tune.space.{key}[{k}] ({v})" for (key, _), k, v
                              in zip(dims, (k_method, k_model), (method, model)) if k is not None)
            try:
                check_model_and_method(validate_spec(space.trial_raw(assignment)))
            except JobError as e:
                raise type(e)(f"{where}: {e}") from None
    return usable


def steps_counter(space: S.SearchSpace, usable: Dict[str, int]):
    """assignment -> the trial's total optimizer steps (batch size and workers may be searched)."""
    from peft_ray.preflight import count_steps
    from peft_ray.spec import validate_spec

    def total(assignment: Dict[str, Any]) -> int:
        s = validate_spec(space.trial_raw(assignment))
        return count_steps(s, usable[s.template.text])[1]
    return total


def plan_search(spec: JobSpec, space: S.SearchSpace, out: Path, resume: bool) -> Dict[str, Any]:
    """The templates in play and the trials to run, saved so --resume reruns exactly these."""
    state_file = out / SEARCH_STATE
    if resume and state_file.exists():
        state = read_state(state_file, space)     # data: only the job's own candidates
        space.template_ids, space.verbalizer_for = state["template_ids"], state["verbalizer_for"]
        return state
    screen = space.prescreen      # (SearchSpace.from_spec: tune.prescreen, and something to screen)
    if screen:
        from peft_ray.tune.prescreen import prescreen_templates

        space.template_ids, space.verbalizer_for = prescreen_templates(spec, space, out)
    if len(space.verbalizers) > 1 and not space.verbalizer_trains:
        print("[peft-ray] note: task.head trains a classification head, which never reads the verbalizer; "
              "each template trains once, with " + ("its best pre-screened verbalizer" if screen else
                                                     "verbalizer[0] (set tune.prescreen: true to pick per template)"))
    trials = S.draw_trials(space, spec.tune) if spec.tune.search != "optuna" else None
    state = {"template_ids": space.template_ids, "verbalizer_for": space.verbalizer_for, "trials": trials}
    write_file(state_file, json.dumps(state, indent=1))
    return state


def candidate_specs(space: S.SearchSpace, trials: Optional[List[Dict[str, Any]]]) -> List[JobSpec]:
    if trials is not None:
        return S.check_trials(space, trials)
    return S.check_trials(space, S.discrete_combinations(space))


def check_tune(spec: JobSpec, resume: bool = False):
    """(the search space, steps of a trial) after every check that needs no Ray: the space, each
    template's pre-flight, and the schedule over every candidate. The schedule comes before the
    pre-screen, which loads a model and scores every template (minutes)."""
    space = check_search(spec, resume)
    total_of = steps_counter(space, preflight_templates(space))
    every = S.discrete_combinations(space)
    check_schedule(candidate_specs(space, every), [total_of(a) for a in every], spec.tune)
    return space, total_of



def run_tune(spec: JobSpec, *, resume: bool = False, overwrite: bool = False, job_path: str = "JOB.yaml",
             verbosity: int = 1):
    """The whole search; returns the leaderboard rows (best first). `verbosity` is Ray Tune's
    (0 silent, 1 status heartbeat, 2 every trial's start, results and end)."""
    from peft_ray.train.fit import DATA_CPU_SLOTS
    from peft_ray.train.ray_start import init_ray
    from peft_ray.tune.results import write_results

    t0 = time.time()
    if spec.tune is None:
        raise SpecError("tune: the job has no tune section; add one (see docs/tune.md) or use `peft-ray train`")
    space, total_of = check_tune(spec, resume)
    check_fits_here(spec)     # before output.dir is written to and Ray starts (the CLI asked already)
    with prepared_dir(spec, resume, overwrite) as out:
        state = plan_search(spec, space, out, resume)
        specs = candidate_specs(space, state["trials"])
        totals = [total_of(a) for a in (state["trials"] or S.discrete_combinations(space))]
        check_schedule(specs, totals, spec.tune)
        started = init_ray(max(specs, key=lambda s: s.scaling.num_workers * s.scaling.cpus_per_worker))
        plan = plan_resources(specs, spec.tune, DATA_CPU_SLOTS)
        trials = state["trials"]
        n = len(trials) if trials is not None else spec.tune.num_samples
        print(f"[peft-ray] tune: {n} trial(s) over {searched(space, trials)}; {plan.describe()}")
        try:
            make_tuner(spec, space, state["trials"], out, plan.max_concurrent, max(totals), resume, verbosity).fit()
        finally:   # a Ray started here stops now: the trials' last forwarded lines land before the leaderboard
            if started:
                import ray

                ray.shutdown()
        return write_results(out / EXPERIMENT, spec, space, state["trials"], total_of, out, job_path, time.time() - t0)


def searched(space: S.SearchSpace, trials: Optional[List[Dict[str, Any]]]) -> str:
    """What the trials vary: the templates and verbalizers they use (after the pre-screen kept its
    top ones), not what the space lists, and the searched fields."""
    n_t = len({a.get("template", 0) for a in trials}) if trials else len(space.template_ids)
    parts = [f"{n_t} template(s)"]
    if space.verbalizer_trains:   # a trained head never reads one (the pre-screen picked them, if any)
        n_v = len({space.verbalizer_of(a) for a in trials}) if trials else len(space.verbalizers)
        parts += [f"{n_v} verbalizer(s)"] if n_v > 1 else []
    for key, dom in space.dims.items():
        parts.append(f"{key} ({dom.kind})" if dom.continuous else f"{len(dom.values)} {key} value(s)")
    return ", ".join(parts)


def make_tuner(spec: JobSpec, space: S.SearchSpace, trials, out: Path, max_concurrent: int, max_t: int,
               resume: bool, verbosity: int = 1):
    import ray.tune

    t = spec.tune
    fn = ray.tune.with_parameters(run_trial, space=space, trials=trials, out_dir=str(out), metric=t.metric,
                                  mode=t.mode)
    fn = ray.tune.with_resources(fn, TrialResources(space, trials, t))
    path = str(out / EXPERIMENT)
    if resume:
        # Finished trials stay finished; unfinished ones restart and continue from their last
        # checkpoint; errored ones stay errored (their error is in the leaderboard). The scheduler
        # and callbacks are the ones pickled when the search started (ResumableASHA, TrialRecorder).
        return ray.tune.Tuner.restore(path, trainable=fn, resume_unfinished=True, resume_errored=False,
                                      restart_errored=False)
    return ray.tune.Tuner(
        fn, param_space=param_space(space, trials),
        tune_config=ray.tune.TuneConfig(metric=t.metric, mode=t.mode, num_samples=num_samples(t, trials),
                                        scheduler=make_scheduler(t, max_t, str(out)), search_alg=make_search(t),
                                        max_concurrent_trials=max_concurrent, reuse_actors=False,
                                        trial_dirname_creator=trial_dirname),
        run_config=ray.tune.RunConfig(name=EXPERIMENT, storage_path=str(out), verbose=verbosity,
                                      callbacks=[PlacementGroupJanitor(str(out)), TrialRecorder(str(out))],
                                      failure_config=ray.tune.FailureConfig(max_failures=0)))


def trial_dirname(trial) -> str:
    return trial.trial_id


def param_space(space: S.SearchSpace, trials) -> Dict[str, Any]:
    """grid/random: one grid point per drawn trial; optuna: the domains themselves."""
    import ray.tune

    if trials is not None:
        return {"candidate": ray.tune.grid_search(list(range(len(trials))))}
    methods = space.method_names()
    out = {"template": ray.tune.choice(space.template_ids)}
    if space.verbalizer_trains:
        out["verbalizer"] = ray.tune.choice(list(range(len(space.verbalizers))))
    for key, d in space.dims.items():
        is_int = S.is_int_field(S._field_annotation(key, methods))
        lo, hi = (d.bounds + [0, 0])[:2]
        if d.kind == "uniform":
            out[key] = ray.tune.randint(int(lo), int(hi) + 1) if is_int else ray.tune.uniform(lo, hi)
        elif d.kind == "loguniform":
            out[key] = ray.tune.lograndint(int(lo), int(hi) + 1) if is_int else ray.tune.loguniform(lo, hi)
        else:
            out[key] = ray.tune.choice(d.values)
    return out


def num_samples(t: TuneSpec, trials) -> int:
    return 1 if trials is not None else t.num_samples  # the grid over drawn trials already has them all


def make_scheduler(t: TuneSpec, max_t: int, out: str):
    from ray.tune.schedulers import FIFOScheduler

    if t.scheduler.name == "fifo":
        return FIFOScheduler()
    # time_attr "step": rungs are in optimizer steps (grace_period is in steps too), whatever the
    # number of reports so far; max_t is the longest trial's budget.
    # stop_last_trials=False: a trial that reaches max_t ends by itself (its last checkpoint and
    # adapter written) instead of being killed at its final report. ResumableASHA: the rungs are
    # rebuilt from the trials' histories (out/trials/<id>/history.jsonl) by `tune --resume`.
    return ResumableASHA(out, time_attr="step", max_t=max_t, grace_period=t.scheduler.grace_period,
                         reduction_factor=t.scheduler.reduction_factor, stop_last_trials=False)


def make_search(t: TuneSpec):
    if t.search != "optuna":
        return None  # Tune's BasicVariantGenerator walks the grid of drawn trials
    try:
        from ray.tune.search.optuna import OptunaSearch
        import optuna  # noqa: F401
    except ImportError:
        raise SpecError("tune.search: optuna is not installed; `pip install 'peft-ray[optuna]'` (or `pip install "
                        "optuna`), or set tune.search to grid or random") from None
    return OptunaSearch(seed=t.seed)
