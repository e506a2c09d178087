"""Soak: run short jobs for a while and kill random workers and drivers at random moments.

    python bench/soak.py --minutes 20 --out bench/results/soak.json

Each round starts `peft-ray train` (tiny BERT from config, built-in data, 2 workers,
ZeRO-2, checkpoint every 2 steps) as a separate process and then, at random:
- kills one Ray Train worker process (SIGKILL) mid-run: Ray Train must restart the
  group from the latest checkpoint (train.max_failures) and finish;
- kills the driver's whole process group (SIGKILL) mid-run, then runs `--resume`;
- replaces the latest checkpoint's model states with a pickle that would run a command
  (manifest re-hashed, as a writer of the storage could) and runs `--resume`: the job
  must be refused, and the command must never run (tests/security has the unit case);
- or lets it run clean.
After each job every checkpoint left on disk is validated (manifest + sha256).
Ends with a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peft_ray.data import builtin  # noqa: E402
from peft_ray.train.checkpoint import checkpoint_dirs, validate_checkpoint  # noqa: E402
from tests.conftest import job_dict, make_tiny_bert, write_rows  # noqa: E402

STEPS = 40


def _setup(tmp: Path) -> tuple[Path, Path]:
    model = make_tiny_bert(tmp / "model")
    write_rows(tmp / "data" / "train.parquet", builtin.make_rows(512, seed=1))
    write_rows(tmp / "data" / "validation.parquet", builtin.make_rows(64, seed=2))
    return model, tmp / "data"


def _start(job: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "peft_ray.cli", "train", str(job), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _drain(proc, log: list) -> threading.Thread:
    """Collect the driver's output in the background (a full pipe would block the driver)."""
    t = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    t.start()
    return t


def _wait_step(proc, out: Path, min_step: int, timeout: float) -> int:
    """Wait until the run's metrics.jsonl logs a training step at or past `min_step` (the terminal
    shows a progress bar, not lines, so the run record is what says where training is)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        except (OSError, ValueError):
            rows = []
        steps = [r["step"] for r in rows if r.get("kind") == "train"]
        if steps and max(steps) >= min_step:
            return max(steps)
        time.sleep(0.05)
    return -1


def _workers(pid: int) -> list:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in kids if "RayTrainWorker" in " ".join(p.cmdline() or [])]


def _resumed_at(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"resumed from .* at step (\d+)", text)]


class _Boom:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def tampered_round(job: Path, out: Path, stats: dict) -> None:
    """Plant a code-running pickle in the newest checkpoint, re-hash its manifest, resume."""
    import torch

    from peft_ray.train.checkpoint import sha256

    if not (out / "metrics.json").exists():
        subprocess.run([sys.executable, "-m", "peft_ray.cli", "train", str(job), "--overwrite"],
                       capture_output=True, timeout=900)
    ckpts = checkpoint_dirs(out / "ray")
    if not ckpts:
        return
    ckpt, marker = ckpts[-1], out.parent / "pwned"
    for f in (ckpt / "ds").rglob("*model_states.pt"):
        torch.save({"module": _Boom(str(marker))}, f)
    for m in ckpt.glob("MANIFEST.rank*.json"):
        m.write_text(json.dumps({rel: sha256(ckpt / rel) for rel in json.loads(m.read_text())}))
    proc = subprocess.run([sys.executable, "-m", "peft_ray.cli", "train", str(job), "--resume"],
                          capture_output=True, text=True, timeout=900)
    refused = proc.returncode != 0 and "refusing to resume" in proc.stdout + proc.stderr and not marker.exists()
    stats["tampered"] += 1
    stats["tampered_refused"] += refused
    shutil.rmtree(ckpt)                       # the next rounds start from a clean run again
    (out / "metrics.json").unlink(missing_ok=True)
    print(f"[soak] round {stats['jobs'] + stats['tampered']}: tampered refused={refused}", flush=True)


def round_(job: Path, out: Path, mode: str, rng: random.Random, stats: dict) -> None:
    if mode == "tampered":
        return tampered_round(job, out, stats)
    log: list = []
    (out / "metrics.jsonl").unlink(missing_ok=True)   # the last round's record would look like progress
    proc = _start(job, "--overwrite")
    reader = _drain(proc, log)
    kill_at = rng.randint(3, STEPS - 5)
    reached = _wait_step(proc, out, kill_at, 600) if mode != "clean" else -1
    if mode == "worker" and reached > 0:
        victims = _workers(proc.pid)
        if victims:
            rng.choice(victims).kill()
    if mode == "driver" and reached > 0:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=10)
        proc = _start(job, "--resume")
        reader = _drain(proc, log)
    proc.wait(timeout=900)
    reader.join(timeout=30)
    # Worker lines ("resumed from ... at step N") reach train.log; the terminal keeps only the summary.
    text = "".join(log) + ((out / "train.log").read_text(errors="replace") if (out / "train.log").exists() else "")
    ok = proc.returncode == 0 and json.loads((out / "metrics.json").read_text()).get("step") == STEPS
    stats["jobs"] += 1
    stats["completed"] += ok
    if mode != "clean" and reached > 0:
        stats["failures"] += 1
        stats["survived"] += ok
        resumed = _resumed_at(text)
        if resumed:
            stats["steps_lost"].append(max(0, reached - resumed[-1]))
    for ckpt in checkpoint_dirs(out / "ray"):
        stats["checkpoints"] += 1
        stats["checkpoints_ok"] += validate_checkpoint(ckpt)[0]
    print(f"[soak] round {stats['jobs'] + stats['tampered']}: {mode:<6} killed_at={reached:>3} ok={ok}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/soak.json")
    ap.add_argument("--modes", default="worker,driver,clean,tampered",
                    help="round kinds to draw from (a smoke run can pick one)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    stats = {"jobs": 0, "completed": 0, "failures": 0, "survived": 0, "checkpoints": 0,
             "checkpoints_ok": 0, "steps_lost": [], "tampered": 0, "tampered_refused": 0}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model, data = _setup(Path(tmp))
        out = Path(tmp) / "run"
        job = Path(tmp) / "job.yaml"
        job.write_text(yaml.safe_dump(job_dict(model, data, out, train={
            "max_steps": STEPS, "checkpoint_every": 2, "eval_every": STEPS, "max_failures": 3})))
        while time.time() - t0 < args.minutes * 60:
            round_(job, out, rng.choice(args.modes.split(",")), rng, stats)
    lost = stats["steps_lost"]
    summary = (f"soak {time.time() - t0:.0f}s: {stats['completed']}/{stats['jobs']} jobs completed, "
               f"{stats['survived']}/{stats['failures']} failures survived, {stats['checkpoints_ok']}/"
               f"{stats['checkpoints']} checkpoints intact, steps lost per failure: "
               f"mean {sum(lost) / max(len(lost), 1):.1f}, max {max(lost, default=0)}, "
               f"{stats['tampered_refused']}/{stats['tampered']} tampered checkpoints refused")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**stats, "summary": summary}, indent=2))
    print(summary)


if __name__ == "__main__":
    main()
