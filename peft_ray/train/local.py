"""`peft-ray train JOB --local`: the same recipe in this process, without Ray.

The same train_func, DeepSpeed engine (a single-rank process group), kernels,
evaluation and adapter output; only the data iterator (pyarrow instead of a Ray
Data shard) and the reporter (a local checkpoints/ folder) differ. For
debugging, for machines without Ray, and for single-GPU boxes.

`run_in_process` is the one assembly of "the recipe in this process": --local uses it with a
LocalReporter, a 1-worker `peft-ray tune` trial with its TuneReporter.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from peft_ray.data.preprocess import preprocess
from peft_ray.preflight import run_preflight
from peft_ray.spec import JobSpec, dump_spec
from peft_ray.storage import Location
from peft_ray.tasks.pipeline import make_preprocess_config, needed_columns
from peft_ray.train.data_iter import LocalDataIterators
from peft_ray.train.faults import faults_from_env
from peft_ray.train.recipe import RunFacts, train_func
from peft_ray.train.report import LocalReporter


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_single_rank(use_gpu: bool) -> None:
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                       "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    dist.init_process_group("nccl" if use_gpu and torch.cuda.is_available() else "gloo")


def local_data(spec: JobSpec, pre, train: bool = True) -> LocalDataIterators:
    """pyarrow reading + the job's preprocessing in this process, as one rank."""
    return LocalDataIterators(pre.train.files if train else [], pre.validation.files if pre.validation else None,
                              make_preprocess_config(spec, pre.model_path, "train"), needed_columns(spec), 0, 1,
                              preprocess, val_cfg=make_preprocess_config(spec, pre.model_path, "validation"))


def run_in_process(spec: JobSpec, pre, reporter, *, resume_from: Optional[str] = None,
                   log_dir: Optional[str] = None, bar: str = "none", log_tag: str = ""):
    """The recipe in this process as a single rank, reporting to `reporter`; returns it."""
    init_single_rank(spec.scaling.use_gpu)
    run = RunFacts(total_steps=pre.total_steps, steps_per_epoch=pre.steps_per_epoch,
                   resume_from=str(resume_from) if resume_from else None, faults=faults_from_env(),
                   log_dir=log_dir, bar=bar, log_tag=log_tag)
    return train_func({"spec": dump_spec(spec), "run": run.as_config()}, reporter=reporter,
                      data=local_data(spec, pre))


def local_threads(scaling) -> Optional[int]:
    """Torch threads for the one --local process: the CPUs the job's worker group would have had
    (2 workers x 1 CPU -> 2 threads), at most this machine's. Without it the one process kept a
    worker's single thread and left the other cores idle (the default job trained 1.6x slower
    than through Ray on 2 cores). An explicit `scaling.torch_threads`, and GPU jobs, stay as set."""
    if scaling.torch_threads or scaling.use_gpu:
        return scaling.torch_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, int(scaling.num_workers * scaling.cpus_per_worker)))


def local_spec(spec: JobSpec) -> JobSpec:
    """The job as --local runs it (and records it in job.yaml): one process with the worker group's
    threads; the global batch stays the same."""
    spec = spec.model_copy(deep=True)
    if spec.scaling.use_gpu and not _has_gpu():   # it trained on the CPU with one thread (run_local says so)
        spec.scaling.use_gpu = False
    spec.scaling.torch_threads = local_threads(spec.scaling)
    spec.scaling.num_workers = 1
    return spec


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def run_local(spec: JobSpec, *, resume: bool = False, overwrite: bool = False,
              bar: str = "tqdm") -> Dict[str, Any]:
    from peft_ray.train.outputs import finish_run, write_outputs
    from peft_ray.train.run_dir import check_local_output, prepared_output_dir, resumed_from

    t0 = time.time()
    check_local_output(spec.output.dir)
    if spec.scaling.use_gpu and not _has_gpu():
        print("[peft-ray] note: scaling.use_gpu is set but this machine has no GPU torch can use; --local "
              "trains on the CPU with the worker group's threads", file=sys.stderr)
    spec = local_spec(spec)
    pre = run_preflight(spec)
    checkpoint, done = resumed_from(spec, pre, resume, overwrite, local=True)
    if done is not None:
        return finish_run(spec, pre, checkpoint, done, local=True)
    resume_from = Path(checkpoint) if checkpoint else None
    with prepared_output_dir(spec, resume, overwrite, local=True, pre=pre) as out:
        reporter = LocalReporter(spec.output.dir, spec.train.keep_checkpoints,
                                 str(resume_from) if resume_from else None)
        reporter = run_in_process(spec, pre, reporter, resume_from=resume_from,
                                  log_dir=str(Path(out.path).resolve()), bar=bar)
        best = Location.at(reporter.best_checkpoint) if reporter.best_checkpoint else None
        return write_outputs(out, Location.at(reporter.last_checkpoint), reporter.last_metrics,
                             time.time() - t0, pre, best=best)
