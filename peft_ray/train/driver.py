"""The driver side of `peft-ray train`: pre-flight, Ray start, TorchTrainer, outputs."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional

import yaml

from peft_ray.errors import CheckpointError, JobError
from peft_ray.preflight import Preflight, SplitFacts, run_preflight
from peft_ray.replaced import check_no_leftover, check_only_run_files, replacing
from peft_ray.spec import JobSpec, dump_spec, saved_spec
from peft_ray.spec.load import recorded_mapping
from peft_ray.storage import Location, check_output_dir, is_uri, join, location_of
from peft_ray.train.checkpoint import checkpoint_at_step
from peft_ray.train.faults import faults_from_env
from peft_ray.train.fit import DATA_CPU_SLOTS, cpu_fit_problem  # DATA_CPU_SLOTS: tune/runner.py's too
from peft_ray.train.recipe import RunFacts, train_func
from peft_ray.train.interrupt import noting_sigint
from peft_ray.train.resume import (Finished, check_layout, check_same_run, find_checkpoint, finished,
                                   unread_fields)


@contextlib.contextmanager
def prepared_output_dir(spec: JobSpec, resume: bool, overwrite: bool, local: bool = False) -> Iterator[Location]:
    """output.dir for the block's run. Refuses to mix two different jobs in one folder and never
    deletes without --overwrite; with it, the previous run is set aside and deleted only once the
    block has finished, or put back if it fails (peft_ray/replaced.py). output.dir is a local path
    or a URI (s3://, gs://, file://): both go through pyarrow.fs."""
    out = Location.at(spec.output.dir)
    check_can_start(spec, resume, overwrite, local)
    out.mkdir()
    with replacing(out) if overwrite else contextlib.nullcontext():
        (out / "job.yaml").write_text(yaml.safe_dump(saved_spec(spec), sort_keys=False))
        yield out


def check_can_start(spec: JobSpec, resume: bool, overwrite: bool, local: bool = False) -> None:
    """Whether output.dir can take this run, checked before anything is written there (the CLI calls
    it before train.log opens). A folder holding a run is never taken without --resume or
    --overwrite; one whose run stopped before its first checkpoint says to pass --overwrite (the
    answer to both a plain start and --resume there)."""
    check_output_dir(spec.output.dir)
    out = Location.at(spec.output.dir)
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
    if not same_job:
        raise CheckpointError(f"output.dir '{out}' holds job '{old.get('name')}' "
                              f"({old.get('method', {}).get('name')}); it cannot resume '{spec.name}'")
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
EARLY_RUN_FILES = {"job.yaml", "train.log", "metrics.jsonl", "tensorboard", "ray", "checkpoints", "curves.png"}
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


def init_ray(spec: JobSpec, source: Optional[str] = None) -> bool:
    """Join the given cluster, or start Ray in-process on this machine. True if this call
    started (or joined) Ray, so the caller shuts it down."""
    import ray

    if ray.is_initialized():
        return False
    address = spec.scaling.address or os.environ.get("RAY_ADDRESS")
    if address:
        join_cluster(address, source or ("scaling.address" if spec.scaling.address else "$RAY_ADDRESS"))
        return True
    check_fits_this_machine(spec)
    note_started_cluster()
    start_local_ray((os.cpu_count() or 1) + DATA_CPU_SLOTS)
    return True


def check_fits_this_machine(spec: JobSpec) -> None:
    """The workers of a Ray started in-process (no scaling.address, no $RAY_ADDRESS) fit this
    machine's CPUs; a cluster's are checked once joined (check_cluster_fits). The CLI asks before
    output.dir is written to."""
    if spec.scaling.address or os.environ.get("RAY_ADDRESS"):
        return
    cpus = os.cpu_count() or 1
    need = spec.scaling.num_workers * spec.scaling.cpus_per_worker
    if need > cpus:
        raise JobError(f"scaling.num_workers={spec.scaling.num_workers} x cpus_per_worker="
                       f"{spec.scaling.cpus_per_worker} needs {need:g} CPUs but this machine has {cpus}; "
                       "lower scaling.num_workers or scaling.cpus_per_worker, or run it on a cluster "
                       "(scaling.address=HEAD:6379, or `peft-ray submit`)")


def note_started_cluster() -> None:
    """Say so when a `ray start` cluster runs on this machine: the job does not join it unless
    told to (scaling.address or RAY_ADDRESS), as Ray's own ray.init() would have tried."""
    try:
        from ray._private.utils import read_ray_address   # the file `ray start` writes; private, so guarded

        found = read_ray_address()
    except Exception:   # noqa: BLE001 - only a note
        return
    if found:
        print(f"[peft-ray] note: a Ray cluster started with `ray start` runs here ({found}); this job starts "
              "its own in-process Ray. To run on that cluster: scaling.address=auto (or RAY_ADDRESS=auto)")


def check_cluster_address(address: Optional[str], source: str) -> None:
    """A dashboard URL where a cluster address belongs (docs/cluster.md exports one for submit)."""
    if address and address.startswith(("http://", "https://")):
        raise JobError(f"{source} '{address}' is a Ray dashboard URL, which `peft-ray submit` and `peft-ray jobs` "
                       "take (--address); joining a cluster takes its address, e.g. HEAD:6379 or auto. A job runs "
                       f"on that cluster with: peft-ray submit JOB.yaml --address {address}")


def join_cluster(address: str, source: str) -> None:
    """ray.init(address), with the two ways it goes wrong named: a dashboard URL where a cluster
    address belongs, and a token-authenticated cluster joined without RAY_AUTH_MODE=token (Ray
    retries for about 30 s and ends in a traceback)."""
    import ray

    check_cluster_address(address, source)
    check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=True)
    except (ConnectionError, ray.exceptions.AuthenticationError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                "; if the cluster uses token authentication (cluster.yaml's does), set RAY_AUTH_MODE=token "
                "and the token (~/.ray/auth_token, $RAY_AUTH_TOKEN or $RAY_AUTH_TOKEN_PATH)")
        raise JobError(f"{source}: could not join the Ray cluster at '{address}' ({first}){hint}") from None


API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"
_our_api_server: Dict[str, str] = {}      # the address start_local_ray last set (a user's own value wins)


def start_local_ray(num_cpus: int) -> None:
    """ray.init of an in-process Ray with its dashboard, whose processes ask their own dashboard.

    Ray's state API finds "the" local cluster by auto-detection (RAY_ADDRESS, a `ray start`
    cluster's address file, else the GCS processes it sees). Ray Train's placement-group cleaner
    asks it every second whether its controller is alive; with a second Ray on the machine (a
    second job, a test run) it refuses ("multiple active Ray instances") or answers from the other
    cluster, and a CI run here lost a running job's placement group that way ("A worker health
    check failed"). So the dashboard gets a port chosen here and RAY_API_SERVER_ADDRESS names it
    before ray.init: Ray's processes inherit it."""
    import ray

    os.environ.update(ray_train_env_defaults(os.environ))   # before ray.init: Ray's processes inherit them
    # Not Ray's usual 8265: that is where `ray dashboard cluster.yaml` forwards a cluster's dashboard
    # and where `peft-ray submit` sends jobs by default; a local run holding it took those jobs
    # into its own short-lived Ray (a review finding), and blocked the forward. A port named to
    # ray.init gets no retries there: another Ray that starts at the same moment may take it between
    # free_port's check and the dashboard's bind, so that start is tried again on another free port.
    for attempt in range(3):
        port = free_port(LOCAL_DASHBOARD_PORT if attempt == 0 else 0)
        if os.environ.get(API_SERVER_ENV) in (None, _our_api_server.get("url")):
            _our_api_server["url"] = os.environ[API_SERVER_ENV] = f"http://127.0.0.1:{port}"
        before = child_pids()
        try:
            # address "local": a new Ray even where `ray start` left a cluster's address file (plain
            # ray.init() would join that cluster, and refuses num_cpus there)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                     dashboard_port=port, log_to_driver=True, configure_logging=True, logging_level="WARNING")
            break
        except Exception as e:
            if not any(m in str(e) for m in ("valid port for dashboard", "already occupied")) or attempt == 2:
                raise
            ray.shutdown()
            stop_children(child_pids() - before)
    print(f"[peft-ray] Ray dashboard of this run: http://127.0.0.1:{port}")


LOCAL_DASHBOARD_PORT = 8266


def child_pids() -> set:
    import psutil

    return {c.pid for c in psutil.Process().children(recursive=True)}


def stop_children(pids: set) -> None:
    """The processes a ray.init that failed part-way started (its GCS and log monitor are up before
    the dashboard port is tried); ray.shutdown() knows no node to stop then."""
    import psutil

    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else a free one."""
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise JobError("no free local port for the Ray dashboard")


# Ray Train settings for the Ray that peft-ray starts in-process on this machine (a cluster keeps its
# operator's). BENCHMARKS.md, "Ray Train's own waits".
IN_PROCESS_RAY_TRAIN_ENV = {
    # The controller polls its workers every 2 s and takes one report per poll, and a worker counts
    # as running while a report is queued: a run's end (final report, then "finished") is noticed
    # 2-4 s after train_func returns. At 0.5 s: 0.5-1 s, for about 1% of a core while training.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # The preemption watcher follows node drains (spot instances going away); the machine the job
    # runs on is not drained under it, and the watcher is one more process starting beside the workers.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def ray_train_env_defaults(environ: Mapping[str, str]) -> Dict[str, str]:
    """IN_PROCESS_RAY_TRAIN_ENV less what the user already set (theirs wins)."""
    return {k: v for k, v in IN_PROCESS_RAY_TRAIN_ENV.items() if k not in environ}


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail in seconds with a message, instead of Ray's long connection retries."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise JobError(f"scaling.address: cannot reach the Ray cluster at '{address}' within {timeout:.0f}s "
                       f"({e}). Is the head running (`ray start --head` / `ray up cluster.yaml`) and the "
                       "address host:port right?") from None


def check_cluster_fits(spec: JobSpec) -> None:
    """A message, not a hang, when the cluster cannot hold the worker group."""
    import ray

    total = ray.cluster_resources()
    problem = cpu_fit_problem(spec.scaling.num_workers, spec.scaling.cpus_per_worker, total.get("CPU", 0))
    if problem:
        raise JobError(problem)
    if spec.scaling.use_gpu and spec.scaling.num_workers > total.get("GPU", 0):
        raise JobError(f"scaling.use_gpu: {spec.scaling.num_workers} workers need as many GPUs; "
                       f"the cluster has {total.get('GPU', 0):g}")


# A split of up to this many rows is tokenized here, in the driver, by the same preprocess
# function, and handed to Ray Data as in-memory Arrow blocks: every epoch and evaluation then
# reads blocks. Through Ray Data tasks the same work cost 13.7 s for the default job's 3,600 rows
# on 2 cores (mostly task workers starting and importing transformers) and, run lazily inside
# the workers, 27-29 s of a SST-2 evaluation (BENCHMARKS.md); here it is about a second.
# Larger splits stream, tokenized by Ray Data while the workers train.
IN_DRIVER_ROWS = 50_000


def build_datasets(spec: JobSpec, pre: Preflight) -> Dict[str, Any]:
    """Ray Data datasets: read -> render + tokenize (map_batches), or small splits tokenized here."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # rank 0 logs progress instead
    out = {"train": split_dataset(spec, pre, pre.train, "train").randomize_block_order(seed=spec.train.seed)}
    if pre.validation:
        out["validation"] = split_dataset(spec, pre, pre.validation, "validation")
    return out


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
            name=name, storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=spec.train.max_failures),
            # the K best by the job's metric plus the latest (Ray never prunes the latest): see best.py
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=spec.train.keep_checkpoints,
                                                         checkpoint_score_attribute="keep_score",
                                                         checkpoint_score_order="max")),
    )


PHASES = (("model + engine", "setup_seconds"), ("data", "data_seconds"), ("training", "train_seconds"),
          ("evaluation", "eval_seconds"), ("checkpoints", "checkpoint_seconds"), ("save", "save_seconds"))


def time_phases(final: Dict[str, Any]) -> str:
    """Where this process's wall time went: the workers' own clocks per phase, less what earlier
    attempts of a resumed run spent (`carried_*`); the rest (Ray and the worker group starting,
    preflight, the last save, outputs) is what remains of the wall time."""
    parts = [(label, float(final.get(key, 0.0)) - float(final.get(f"carried_{key}", 0.0))) for label, key in PHASES]
    rest = max(0.0, float(final.get("wall_seconds", 0.0)) - sum(v for _, v in parts))
    return " | ".join(f"{label} {v:.1f}" for label, v in [*parts, ("start-up + other", rest)])


def write_outputs(out: Location, checkpoint: Location, metrics: Dict[str, Any], wall: Optional[float],
                  pre: Preflight, best: Optional[Location] = None) -> Dict[str, Any]:
    """adapter/ (the best evaluation's; the last when nothing was evaluated), adapter_last/
    (never half-written, see Location.replace_with), curves.png, then metrics.json. `wall` is the
    time before this call; the save is timed here and added (the "save" phase). None: the run's
    wall time is unknown (outputs written by a later --resume)."""
    from peft_ray.adapter import ADAPTER_FILES, CONFIG
    from peft_ray.train.runlog import plot_curves

    t0 = time.time()
    sources = {"adapter_last": checkpoint / "adapter", "adapter": (best or checkpoint) / "adapter"}
    for src in sources.values():     # both checked before either is written: a refusal changes nothing
        src.own_files(ADAPTER_FILES)
    for name, src in sources.items():   # only the adapter's own regular files, as `export` passes on
        (out / name).replace_with(src, last=CONFIG, names=ADAPTER_FILES)
    if not is_uri(out.uri):
        plot_curves(out.uri, warn=lambda m: print(f"[peft-ray] {m}"))
    save = time.time() - t0
    final = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "keep_score"}
    if wall is not None:
        final["wall_seconds"] = wall + save
    final.update(save_seconds=save, skipped_rows=pre.train.skipped + (pre.validation.skipped if pre.validation else 0),
                 checkpoint=checkpoint.uri, adapter=(out / "adapter").uri, adapter_last=(out / "adapter_last").uri)
    # which step's adapter adapter/ holds: the best's, or the last's when nothing was evaluated or
    # the best checkpoint (an earlier run's, after --resume) was missing or failed its check
    final["adapter_step"] = final["best_step"] if best is not None and "best_step" in final else final.get("step")
    if "best_step" in final:
        final["best"] = f"step {final['best_step']} ({final['metric_for_best']} {final['best_metric']:.4f})"
        if best is None:
            final["best"] += f"; adapter/ holds step {final['adapter_step']}: that checkpoint was not usable"
    if "train_seconds" in final and wall is not None:
        final["time_phases"] = time_phases(final)
    (out / "metrics.json").write_text(json.dumps(final, indent=2))
    return final


def resumed_from(spec: JobSpec, pre, resume: bool, overwrite: bool, local: bool):
    """(the checkpoint --resume continues, or None; a Finished run with nothing left to train, or
    None), decided before output.dir is written to."""
    if not resume:
        return None, None
    check_can_start(spec, resume, overwrite, local)
    out = Location.at(spec.output.dir)
    checkpoint = find_checkpoint(out, local)
    return checkpoint, finished(out, checkpoint, pre.total_steps, spec.train.early_stopping_patience)


def finish_run(spec: JobSpec, pre, checkpoint: str, done: Finished, local: bool) -> Dict[str, Any]:
    """A --resume with nothing left to train: the recorded metrics.json as it is, or the outputs the
    run was stopped before writing, from its last checkpoint's report."""
    if done.recorded:
        return done.metrics
    out = Location.at(spec.output.dir)
    return write_outputs(out, Location.at(checkpoint), done.metrics, None, pre, best=kept_best(out, done.metrics, local))


def run_train(spec: JobSpec, *, resume: bool = False, overwrite: bool = False,
              bar: Optional[str] = None) -> Dict[str, Any]:
    t0 = time.time()
    pre = run_preflight(spec)
    resume_from, done = resumed_from(spec, pre, resume, overwrite, local=False)
    if done is not None:
        return finish_run(spec, pre, resume_from, done, local=False)
    with prepared_output_dir(spec, resume, overwrite) as out:
        started = init_ray(spec)
        check_cluster_fits(spec)
        try:
            with noting_sigint() as interrupted:
                try:
                    result = make_trainer(spec, pre, out.uri, resume_from, bar=bar).fit()
                except BaseException:
                    if interrupted():     # Ray's own Ctrl-C handler ended fit(): a Ctrl-C to the CLI
                        raise KeyboardInterrupt from None
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
        return write_outputs(out, ckpt, metrics, time.time() - t0, pre, best=best_checkpoint(result, metrics, out))


def best_checkpoint(result, metrics: Dict[str, Any], out: Location) -> Optional[Location]:
    """The retained checkpoint at metrics["best_step"] (the retention score keeps it): this Ray
    run's, or after --resume one an earlier run of this output dir kept under ray/."""
    if "best_step" not in metrics:
        return None
    for ckpt, m in result.best_checkpoints or []:
        if m.get("step") == metrics["best_step"]:
            return location_of(ckpt.filesystem, ckpt.path, like=out.uri)
    return kept_best(out, metrics, local=False)


def kept_best(out: Location, metrics: Dict[str, Any], local: bool) -> Optional[Location]:
    """The checkpoint at metrics["best_step"] that the run in `out` kept (--local's under
    checkpoints/, Ray's under ray/) and that passes its check; None, said, when there is none."""
    if "best_step" not in metrics:
        return None
    root = (out / "checkpoints") if local else (out / "ray")
    found = checkpoint_at_step(Path(root.path) if local else root.uri, int(metrics["best_step"]))
    if not found:
        print(f"[peft-ray] warning: no checkpoint of step {int(metrics['best_step'])} (the best) is kept under "
              f"{root.uri} that passes its check; adapter/ holds the last checkpoint's adapter instead")
    return Location.at(found) if found else None
