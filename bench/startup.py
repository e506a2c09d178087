"""Where a Ray-mode job's time goes outside training, and the floor that Ray itself sets.

    python bench/startup.py                       # jobs/default.yaml; --job, --override to change
    python bench/startup.py --floor-only          # only the Ray floor (about 40 s)

1. The driver's timeline of `peft-ray train JOB` (the same calls as train/driver.run_train):
   imports, pre-flight, ray.init, datasets, TorchTrainer.fit (with the workers' own phase
   clocks from the final metrics), ray.shutdown.
2. The floor: ray.init as peft-ray calls it (with and without the dashboard), a TorchTrainer.fit
   of the job's worker count whose train_func does nothing, ray.shutdown. No model, no data.
3. The floor's processes: every Python worker process Ray started during the empty fit, when
   (seconds from the fit's start, from the raylet's log) and for which actor (the first line of
   its log), which shows how much of the fit is processes starting one after another.
Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timeline(job: str, overrides: list) -> dict:
    t0, marks = time.perf_counter(), {}

    def mark(name: str) -> None:
        marks[name] = time.perf_counter() - t0 - sum(marks.values())

    from peft_ray.spec import load_spec
    from peft_ray.train import driver, ray_start, run_dir
    mark("imports")
    spec = load_spec(ROOT / job, overrides)
    pre = driver.run_preflight(spec)
    with run_dir.prepared_output_dir(spec, False, True) as out:   # the old output goes when this block ends
        pass
    mark("pre-flight")
    ray_start.init_ray(spec)
    mark("ray.init")
    datasets = driver.build_datasets(spec, pre)
    mark("datasets")
    driver.build_datasets = lambda *a, **k: datasets    # make_trainer builds them again otherwise
    result = driver.make_trainer(spec, pre, out.uri, None, bar="none").fit()
    mark("TorchTrainer.fit")
    import ray
    ray.shutdown()
    mark("ray.shutdown")
    m = dict(result.metrics or {})
    inside = {k: m.get(f"{k}_seconds", 0.0) for k in ("setup", "data", "train", "eval", "checkpoint")}
    return {"stages": marks, "worker_phases": inside, "total": sum(marks.values()),
            "non_training": sum(marks.values()) - inside["train"]}


def floor(workers: int) -> dict:
    import subprocess
    import sys

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from peft_ray.train.fit import DATA_CPU_SLOTS

    cpus = workers + DATA_CPU_SLOTS
    probe = (f"import time, ray; t = time.perf_counter(); ray.init(address='local', num_cpus={cpus}, "
             "include_dashboard=False, logging_level='WARNING'); print(time.perf_counter() - t); "
             "ray.shutdown()")   # one ray.init a process
    out = {"ray.init (dashboard off)": float(subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                                               text=True, check=True).stdout.split()[-1])}
    t = time.perf_counter()
    ray.init(address="local", num_cpus=cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_level="WARNING", configure_logging=True)
    out["ray.init (dashboard on, as peft-ray)"] = time.perf_counter() - t
    session = _session_dir()
    t, wall = time.perf_counter(), time.time()
    TorchTrainer(_empty, scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
                 run_config=ray.train.RunConfig(storage_path="/tmp/peft-ray-floor", name=f"f{time.time_ns()}")).fit()
    out[f"TorchTrainer.fit, {workers} workers, empty train_func"] = time.perf_counter() - t
    t = time.perf_counter()
    ray.shutdown()
    out["ray.shutdown"] = time.perf_counter() - t
    return {"seconds": out, "processes": fit_processes(session, wall) if session else []}


def _session_dir() -> str:
    """This Ray's session folder (its logs); "" where Ray's private handle moved."""
    try:
        from ray._private.worker import _global_node

        return _global_node.get_session_dir_path()
    except Exception:   # noqa: BLE001 - the process list is a note, the timings stand without it
        return ""


RAYLET_START = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*Started worker process with pid (\d+)")


def fit_processes(session: str, since: float) -> list:
    """[{"pid", "at_s", "actor"}] for each worker process the raylet started after `since` (epoch
    seconds), `at_s` counted from it; "actor" from the process's own log ("" where it ran none)."""
    logs = Path(session) / "logs"
    try:
        raylet = (logs / "raylet.out").read_text(errors="replace")
    except OSError:
        return []
    actors = {}
    for f in logs.glob("worker-*.out"):
        head = f.read_text(errors="replace")[:400]
        m = re.search(r":actor_name:(\S+)", head)
        actors[f.stem.rsplit("-", 1)[-1]] = m.group(1) if m else ""
    return parse_starts(raylet, since, actors)


def parse_starts(raylet_text: str, since: float, actors: dict) -> list:
    from datetime import datetime

    rows = []
    for line in raylet_text.splitlines():
        m = RAYLET_START.match(line)
        if not m:
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - since
        if at >= 0:
            rows.append({"pid": int(m.group(2)), "at_s": round(at, 2), "actor": actors.get(m.group(2), "")})
    return rows


def _empty(config: dict) -> None:
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default="jobs/default.yaml")
    ap.add_argument("--override", action="append", default=[])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--floor-only", action="store_true")
    ap.add_argument("--out", default="bench/results/startup.json")
    a = ap.parse_args()
    res = {}
    if not a.floor_only:   # first, so that its imports are cold, as in a user's process
        res["timeline"] = timeline(a.job, ["output.dir=/tmp/peft-ray-startup", *a.override])
    fl = floor(a.workers)
    res["floor"], res["floor_processes"] = fl["seconds"], fl["processes"]
    print("Ray floor (s):")
    for k, v in res["floor"].items():
        print(f"  {k:<48}{v:>7.1f}")
    if res["floor_processes"]:
        print("  processes Ray started in the empty fit (s from its start):")
        for p in res["floor_processes"]:
            print(f"    {p['at_s']:>6.2f}  pid {p['pid']:<8} {p['actor'] or '(no actor: idle or a task)'}")
    if "timeline" in res:
        tl = res["timeline"]
        print(f"\n{a.job} driver timeline (s):")
        for k, v in tl["stages"].items():
            print(f"  {k:<48}{v:>7.1f}")
        print("  inside fit, per worker: " + " | ".join(f"{k} {v:.1f}" for k, v in tl["worker_phases"].items()))
        print(f"  total {tl['total']:.1f}, outside training {tl['non_training']:.1f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
