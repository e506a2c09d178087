"""Whether a search's trials fit: the CPUs one trial needs, how many run at once, and the check
against the Ray a search starts in-process, made before Ray starts and before output.dir is
written to. No Ray import: the CLI runs it before its terminal router binds Ray's loggers."""

from __future__ import annotations

import math
import os
from typing import List, Tuple

from peft_ray.errors import JobError
from peft_ray.spec import JobSpec
from peft_ray.spec.tune import TuneSpec


def trial_cpus(spec: JobSpec, t: TuneSpec) -> float:
    workers = spec.scaling.num_workers * spec.scaling.cpus_per_worker
    return workers if spec.scaling.num_workers == 1 else workers + t.trial_cpus


def trials_at_once(specs: List[JobSpec], t: TuneSpec, cpus: float, gpus: float, data_cpus: float) -> Tuple[float, int]:
    """(CPUs a trial needs, how many trials fit in `cpus` and `gpus`), refusing when none fits."""
    per_trial = max(trial_cpus(s, t) for s in specs)
    free = cpus - data_cpus
    if per_trial > free:
        raise JobError(f"one trial needs {per_trial:g} CPUs (scaling.num_workers x scaling.cpus_per_worker "
                       f"+ tune.trial_cpus) but the cluster has {cpus:g}, {data_cpus:g} of them kept for "
                       "Ray Data; lower scaling.num_workers or tune.trial_cpus")
    fit = int(math.floor(free / per_trial + 1e-9))
    gpu_workers = max((s.scaling.num_workers for s in specs if s.scaling.use_gpu), default=0)
    if gpu_workers:
        fit = min(fit, int(gpus // gpu_workers))
        if fit == 0:
            raise JobError(f"scaling.use_gpu: a trial needs {gpu_workers} GPUs; the cluster has {gpus:g}")
    return per_trial, fit


def check_fits_here(spec: JobSpec) -> None:
    """Every candidate trial fits the Ray this search starts in-process: this machine's CPUs plus Ray
    Data's slots, its GPUs. A joined cluster (scaling.address, $RAY_ADDRESS) is sized once joined
    (trial.plan_resources). A candidate's own fault is left to the search's checks, which name it."""
    from peft_ray.train.fit import DATA_CPU_SLOTS
    from peft_ray.train.ray_start import check_fits_this_machine
    from peft_ray.tune import space as S

    if spec.scaling.address or os.environ.get("RAY_ADDRESS"):
        return
    try:
        space = S.SearchSpace.from_spec(spec)
        specs = S.check_trials(space, S.discrete_combinations(space))
    except JobError:
        return
    if any(s.scaling.address for s in specs):
        return
    for s in specs:
        check_fits_this_machine(s)      # a trial's workers on this machine's CPUs, GPUs
    gpus = 0
    if any(s.scaling.use_gpu for s in specs):
        import torch

        gpus = torch.cuda.device_count()   # what the in-process Ray finds
    trials_at_once(specs, spec.tune, (os.cpu_count() or 1) + DATA_CPU_SLOTS, float(gpus), DATA_CPU_SLOTS)
