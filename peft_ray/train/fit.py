"""Does the worker group leave the cluster room for Ray Data? One rule for every place that
starts training: the local head (train/ray_start.py adds DATA_CPU_SLOTS logical CPUs for it), the
driver on a cluster, and `peft-ray submit` before anything is uploaded.

Ray Train's workers hold `scaling.num_workers x scaling.cpus_per_worker` CPUs for the whole run;
Ray Data's read tasks need a whole CPU each (the tokenize tasks half of one). When the workers
take every CPU, Ray Data logs "Cluster resources are not enough to run any task ..." and the
job hangs forever, so the rule keeps DATA_CPU_SLOTS CPUs free next to the workers."""

from __future__ import annotations

from typing import Optional

DATA_CPU_SLOTS = 1  # logical CPU kept for Ray Data's (light) read and tokenize tasks


def cpu_fit_problem(num_workers: int, cpus_per_worker: float, cluster_cpus: float,
                    reserved: float = 0.0, where: str = "the Ray cluster") -> Optional[str]:
    """None when `num_workers` x `cpus_per_worker` plus DATA_CPU_SLOTS (plus `reserved`, e.g. the
    job driver's --entrypoint-num-cpus) fit in `cluster_cpus`; else the message saying so."""
    workers = num_workers * cpus_per_worker
    need = workers + DATA_CPU_SLOTS + reserved
    if need <= cluster_cpus + 1e-9:
        return None
    driver = f" + {reserved:g} for the job's driver (--entrypoint-num-cpus)" if reserved else ""
    room = max(cluster_cpus - DATA_CPU_SLOTS - reserved, 0)
    fix = (f"lower scaling.num_workers or scaling.cpus_per_worker so that they hold at most {room:g} CPUs"
           if room > 0 else "add CPUs to the cluster (e.g. `ray start --head --num-cpus N` with a larger N)")
    return (f"scaling.num_workers={num_workers} x scaling.cpus_per_worker={cpus_per_worker:g} = {workers:g} CPUs "
            f"for the training workers + {DATA_CPU_SLOTS} for Ray Data's read/tokenize tasks{driver} need "
            f"{need:g} CPUs, but {where} has {cluster_cpus:g}: with every CPU held by the workers the data "
            f"tasks never run and the job hangs. {fix}, or add a node with CPUs")
