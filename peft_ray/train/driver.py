"""The driver side of `peft-ray train`: pre-flight, Ray start, the datasets and the TorchTrainer, then
the outputs (train/run_dir.py, ray_start.py and outputs.py hold those steps)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

from peft_ray.errors import JobError
from peft_ray.preflight import Preflight, run_preflight
from peft_ray.preflight.scan import SplitFacts
from peft_ray.spec import JobSpec, dump_spec
from peft_ray.storage import is_uri, join, location_of
from peft_ray.train.faults import faults_from_env
from peft_ray.train.interrupt import noting_sigint
from peft_ray.train.outputs import best_checkpoint, finish_run, write_outputs
from peft_ray.train.prune import prune_interrupted_runs, say_pruned
from peft_ray.train.ray_start import check_cluster_fits, init_ray
from peft_ray.train.recipe import RunFacts, train_func
from peft_ray.train.run_dir import prepared_output_dir, resumed_from


# A split of up to this many rows is tokenized here, in the driver, by the same preprocess
# function, and handed to Ray Data as in-memory Arrow blocks: every epoch and evaluation then
# reads blocks. Through Ray Data tasks the same work cost 13.7 s for the default job's 3,600 rows
# on 2 cores (mostly task workers starting and importing transformers) and, run lazily inside
# the workers, 27-29 s of a SST-2 evaluation (BENCHMARKS.md); here it is about a second.
# Larger splits are tokenized by Ray Data tasks and shuffled whole before the first batch (shuffled).
IN_DRIVER_ROWS = 50_000


def build_datasets(spec: JobSpec, pre: Preflight) -> Dict[str, Any]:
    """Ray Data datasets: read -> render + tokenize (map_batches), or small splits tokenized here."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # rank 0 logs progress instead
    out = {"train": shuffled(split_dataset(spec, pre, pre.train, "train"), pre.train, spec.train.seed)}
    if pre.validation:
        out["validation"] = split_dataset(spec, pre, pre.validation, "validation")
    return out


def shuffled(ds, facts: SplitFacts, seed: int):
    """The train split in a seeded random order, the same in every epoch's execution (workers
    permute their shard per epoch: recipe.epoch_batches).

    A split tokenized here is blocks of a few hundred rows, so a random block order mixes it. A
    streamed one needs a full shuffle: a Parquet file is one block per row group (up to about a
    million rows), which a block order leaves in file order, so each worker's shard would be one
    part of the file; a label- or source-sorted export then trained on one class at a time (an ML
    review: 929 steps of 1,875 before the first positive row). random_shuffle is an all-to-all
    exchange, paid once: each worker holds its shard whole afterwards (data_iter.held_whole)."""
    if tokenized_here(facts):
        return ds.randomize_block_order(seed=seed)
    # An int seed: the same order every execution (resume). Ray seeds block i's map task with
    # seed + i, which numpy refuses past 2**32 - 1 (train.seed may be up to that): kept below 2**31.
    return ds.random_shuffle(seed=seed % 2**31)


def tokenized_here(facts: SplitFacts) -> bool:
    """Whether the driver tokenizes this split (IN_DRIVER_ROWS) instead of a Ray Data pipeline."""
    return facts.rows <= IN_DRIVER_ROWS


def split_dataset(spec: JobSpec, pre: Preflight, facts: SplitFacts, split: str):
    if not tokenized_here(facts):
        return token_pipeline(spec, pre.model_path, facts.files, split)
    import pyarrow as pa
    import ray.data

    from peft_ray.data.preprocess import preprocess
    from peft_ray.data.sources import iter_arrow
    from peft_ray.tasks.pipeline import make_preprocess_config, needed_columns

    cfg = make_preprocess_config(spec, pre.model_path, split)
    tables = [preprocess(pa.Table.from_batches([b]), cfg) for b in iter_arrow(facts.files, needed_columns(spec), 256)]
    # from_blocks computes the blocks' metadata here; from_arrow would run a Ray task per block
    # for it (about 1 s of the default job, while task workers start and import Ray Data).
    return ray.data.from_blocks([t for t in tables if len(t)] or tables[:1])


def token_pipeline(spec: JobSpec, model_path: str, files, split: str):
    """read (only the columns the task needs) -> hold-out filter -> the task's tokenization."""
    from peft_ray.data.preprocess import preprocess
    from peft_ray.tasks.pipeline import make_preprocess_config, needed_columns
    from peft_ray.data.sources import ray_dataset

    pp = make_preprocess_config(spec, model_path, split)
    ds = ray_dataset(files, needed_columns(spec))
    return ds.map_batches(preprocess, fn_kwargs={"cfg": pp}, batch_format="pyarrow", batch_size=256, num_cpus=0.5)


def log_dir(out: str | Path) -> Optional[str]:
    """Absolute output.dir for the run log (workers' cwd is not the driver's); None for a URI."""
    return None if is_uri(str(out)) else str(Path(out).resolve())


def make_trainer(spec: JobSpec, pre: Preflight, out: str | Path, resume_from: Optional[str | Path],
                 run_config=None, train_fn=None, bar: Optional[str] = None, log_tag: str = ""):
    """`run_config`/`train_fn` replace the defaults (peft-ray tune: per-trial name and storage +
    TuneReportCallback; a train_func wrapper); `log_tag` goes before the run's lines (a trial's id)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    opts = ray.train.DataConfig.default_ingest_options()
    opts.preserve_order = True  # deterministic shards: same seed, same batches (resume equivalence)
    name = run_config.name if run_config else f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = str(run_config.storage_path) if run_config else join(str(out), "ray")  # a path or a URI
    run = RunFacts(total_steps=pre.total_steps, steps_per_epoch=pre.steps_per_epoch,
                   resume_from=str(resume_from) if resume_from else None,
                   storage_dir=join(storage, name),
                   faults=faults_from_env(),
                   # a tune trial (run_config given) keeps to Tune's own logging
                   log_dir=None if run_config else log_dir(out), bar=bar or ("none" if run_config else "ray"),
                   split_train_here=tokenized_here(pre.train),
                   log_tag=log_tag)
    from peft_ray.train.job_error_stop import StopOnJobError

    if run_config is not None:   # a tune trial's, with Tune's report callback
        run_config.callbacks = [*(run_config.callbacks or []), StopOnJobError()]
    return TorchTrainer(
        train_fn or train_func,
        train_loop_config={"spec": dump_spec(spec), "run": run.as_config()},
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.scaling.num_workers, use_gpu=spec.scaling.use_gpu,
            resources_per_worker={"CPU": spec.scaling.cpus_per_worker},
            placement_strategy=spec.scaling.placement_strategy),
        datasets=build_datasets(spec, pre),
        dataset_config=ray.train.DataConfig(datasets_to_split=[] if run.split_train_here else ["train"],
                                            execution_options=opts),
        run_config=run_config or ray.train.RunConfig(
            name=name, storage_path=storage, callbacks=[StopOnJobError()],
            failure_config=ray.train.FailureConfig(max_failures=spec.train.max_failures),
            # the K best by the job's metric plus the latest (Ray never prunes the latest): see best.py
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=spec.train.keep_checkpoints,
                                                         checkpoint_score_attribute="keep_score",
                                                         checkpoint_score_order="max")),
    )


def run_train(spec: JobSpec, *, resume: bool = False, overwrite: bool = False,
              bar: Optional[str] = None) -> Dict[str, Any]:
    t0 = time.time()
    pre = run_preflight(spec)
    resume_from, done = resumed_from(spec, pre, resume, overwrite, local=False)
    if done is not None:
        return finish_run(spec, pre, resume_from, done, local=False)
    with prepared_output_dir(spec, resume, overwrite, pre=pre) as out:
        started = init_ray(spec)
        check_cluster_fits(spec)
        try:
            with noting_sigint() as interrupted:
                try:
                    result = make_trainer(spec, pre, out.uri, resume_from, bar=bar).fit()
                except BaseException as e:
                    if interrupted():     # Ray's own Ctrl-C handler ended fit(): a Ctrl-C to the CLI
                        raise KeyboardInterrupt from None
                    own = worker_job_error(e)   # Ray 2.60's fit() raises the run's error itself
                    if own is not None:
                        raise own from None
                    raise
                # fit() returned: the run ended on its own (Ray's abort leaves a finished run alone and
                # ends an unfinished one with an error), so a late Ctrl-C still gets its outputs written
        finally:
            if started:  # flush the workers' last lines now, not after the summary
                import ray

                ray.shutdown()
        if result.error:
            raise result.error
        ckpt = location_of(result.checkpoint.filesystem, result.checkpoint.path, like=out.uri)
        metrics = dict(result.metrics or {})
        best = best_checkpoint(result, metrics, out)
        final = write_outputs(out, ckpt, metrics, time.time() - t0, pre, best=best)
        if resume_from:   # Ray wrote this run to a new folder: the interrupted one is outside its limit
            say_pruned(*prune_interrupted_runs(out / "ray", ckpt.parent_path, best))
        return final


def worker_job_error(error: BaseException) -> Optional[JobError]:
    """The first rank's own JobError (a row, spec or model fault only a worker met) inside Ray Train's
    WorkerGroupError, or inside the ControllerError that StopOnJobError ends the run with, so that the
    CLI says it in one line as it says the pre-flight's, not Ray's traceback of every worker."""
    failures = dict(getattr(error, "worker_failures", None) or {})
    stopped = getattr(error, "controller_failure", None)
    if isinstance(stopped, JobError):
        return stopped
    return next((e for _, e in sorted(failures.items()) if isinstance(e, JobError)), None)
