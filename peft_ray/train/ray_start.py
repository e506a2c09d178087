"""Ray for `peft-ray train` (and tune, eval, predict through Ray): join a cluster, or start Ray
in-process on this machine with its dashboard, and check the worker group fits."""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

from peft_ray.errors import JobError
from peft_ray.spec import JobSpec
from peft_ray.train.fit import DATA_CPU_SLOTS, cpu_fit_problem  # DATA_CPU_SLOTS: tune/runner.py's too


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
    if spec.scaling.use_gpu:
        import torch

        if torch.cuda.device_count() < spec.scaling.num_workers:
            raise JobError(f"scaling.use_gpu: {spec.scaling.num_workers} worker(s) need as many GPUs but this machine "
                           f"has {torch.cuda.device_count()}; lower scaling.num_workers, set scaling.use_gpu=false, "
                           "or run it on a cluster (scaling.address=HEAD:6379, or `peft-ray submit`)")
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
    check_reachable(address, source=source)
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


def check_reachable(address: str, timeout: float = 10.0, source: str = "scaling.address") -> None:
    """Fail in seconds with a message, instead of Ray's long connection retries; `source` names where
    the address came from (scaling.address, --ray-address, $RAY_ADDRESS)."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        port_number = int(port)
    except ValueError:
        raise JobError(f"{source}: '{address}' is not a Ray cluster address; give host:port, e.g. "
                       "10.0.0.5:6379") from None
    try:
        with socket.create_connection((host or "127.0.0.1", port_number), timeout=timeout):
            pass
    except OSError as e:
        raise JobError(f"{source}: cannot reach the Ray cluster at '{address}' within {timeout:.0f}s "
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
