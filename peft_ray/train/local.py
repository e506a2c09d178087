"""`peft-ray train JOB --local`: the same recipe without Ray.

The same train_func, DeepSpeed engine, kernels, evaluation and adapter output; only the data
iterator (pyarrow instead of a Ray Data shard) and the reporter (a local checkpoints/ folder)
differ. One process gets the worker group's CPUs as threads; with `scaling.local_ranks` > 1 that
many ranks run as processes of this machine (this one rank 0, train/local_ranks.py). For
debugging, for machines without Ray, for small CPU machines (no Ray start-up to pay) and for
single-GPU boxes.

`run_in_process` is the one assembly of "the recipe from this process": --local uses it with a
LocalReporter, a 1-worker `peft-ray tune` trial with its TuneReporter.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from peft_ray import dist as D
from peft_ray.data.preprocess import preprocess
from peft_ray.errors import JobError
from peft_ray.preflight import run_preflight
from peft_ray.spec import JobSpec, dump_spec
from peft_ray.storage import Location
from peft_ray.tasks.pipeline import make_preprocess_config, needed_columns
from peft_ray.train.data_iter import LocalDataIterators
from peft_ray.train.faults import faults_from_env
from peft_ray.train.local_ranks import Ranks, layout
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
    """pyarrow reading + the job's preprocessing in this process: this rank's rows."""
    return rank_data(spec, str(pre.model_path), list(pre.train.files) if train else [],
                     list(pre.validation.files) if pre.validation else None)


def rank_data(spec: JobSpec, model_path: str, train_files: list, val_files: Optional[list]) -> LocalDataIterators:
    """This rank's LocalDataIterators (rank 0 here, the others in train/rank_child.py)."""
    return LocalDataIterators(train_files, val_files, make_preprocess_config(spec, model_path, "train"),
                              needed_columns(spec), D.rank(), D.world(), preprocess,
                              val_cfg=make_preprocess_config(spec, model_path, "validation"))


def run_in_process(spec: JobSpec, pre, reporter, *, resume_from: Optional[str] = None,
                   log_dir: Optional[str] = None, bar: str = "none", log_tag: str = ""):
    """The recipe as scaling.num_workers ranks, this process rank 0 (one rank: no other process),
    reporting to `reporter`; returns it."""
    run = RunFacts(total_steps=pre.total_steps, steps_per_epoch=pre.steps_per_epoch,
                   resume_from=str(resume_from) if resume_from else None, faults=faults_from_env(),
                   log_dir=log_dir, bar=bar, log_tag=log_tag)
    config = {"spec": dump_spec(spec), "run": run.as_config()}
    world = spec.scaling.num_workers   # local_spec's ranks (one for GPU jobs); a tune trial's one worker
    if world == 1:
        init_single_rank(spec.scaling.use_gpu)
        return train_func(config, reporter=reporter, data=local_data(spec, pre))
    return _run_as_ranks(world, config, pre, spec, reporter)


def _run_as_ranks(world: int, config: Dict[str, Any], pre, spec: JobSpec, reporter):
    end_process_group()   # an earlier one-rank run in this process (tests, notebooks)
    ranks = Ranks(world, {**config, "model_path": str(pre.model_path), "train_files": list(pre.train.files),
                          "val_files": list(pre.validation.files) if pre.validation else None})
    os.environ.update({"RANK": "0", "WORLD_SIZE": str(world), "LOCAL_RANK": "0"})
    try:
        ranks.start()
        reporter = train_func(config, reporter=reporter, data=local_data(spec, pre))
        ranks.join()
    except (JobError, KeyboardInterrupt):
        _stop(ranks, reporter)
        raise
    except Exception as e:   # a collective that failed because another rank stopped: say that rank's error
        failed = ranks.failure(grace=3.0)
        _stop(ranks, reporter)
        if failed:
            raise failed from e
        raise
    finally:
        end_process_group()
    return reporter


def _stop(ranks: Ranks, reporter) -> None:
    """The other ranks stopped, then what they left mid-save removed."""
    ranks.stop(release=end_process_group)
    reporter.sweep_staging()


def end_process_group() -> None:
    """Destroy the default process group and DeepSpeed's cached clone of it (deepspeed.comm's
    teardown): a later run in this process builds its own group, and DeepSpeed's clone of the old
    one failed it with "Group ... is not registered"."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    comm = sys.modules.get("deepspeed.comm.comm")
    if comm is not None and getattr(comm, "cdb", None) is not None:
        comm.destroy_process_group()
    else:
        dist.destroy_process_group()


def local_spec(spec: JobSpec) -> JobSpec:
    """The job as --local runs it (and records it in job.yaml): scaling.local_ranks ranks on this
    machine sharing the worker group's threads (local_ranks.layout); the global batch stays the same."""
    spec = spec.model_copy(deep=True)
    if spec.scaling.use_gpu and not _has_gpu():   # it trained on the CPU (run_local says so)
        spec.scaling.use_gpu = False
    spec.scaling.num_workers, spec.scaling.torch_threads = layout(spec.scaling)
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
