"""The `peft-ray train` driver is SIGKILLed mid-run; `--resume` continues from the latest
good checkpoint and finishes the job (real CLI, real Ray, separate processes)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from peft_ray.train.checkpoint import latest_good_checkpoint
from tests.conftest import job_dict

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _cli(job, *extra, **kw):
    return subprocess.Popen([sys.executable, "-m", "peft_ray.cli", "train", str(job), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def interrupt_after_a_checkpoint(job, out) -> str:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) of `train JOB --local
    train.lr=0.01` once its first checkpoint is written; its output, checked to say how to resume."""
    proc = _cli(job, "--local", "train.lr=0.01")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list((out / "checkpoints").glob("checkpoint_*")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, log[-3000:]
    assert f"peft-ray train {job} train.lr=0.01 --local --resume" in log
    return log


def test_sigkill_driver_then_resume(tiny_bert, tiny_data, tmp_path):
    out = tmp_path / "run"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, train={
        "max_steps": 60, "checkpoint_every": 2, "eval_every": 60, "keep_checkpoints": 2})))
    proc = _cli(job)
    deadline = time.time() + 400
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        ckpt = latest_good_checkpoint(out / "ray", warn=lambda m: None) if (out / "ray").exists() else None
        if ckpt is not None:
            break
        time.sleep(0.2)
    assert ckpt is not None, "no checkpoint appeared before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray head it started die at once
    proc.wait(timeout=30)
    killed_at = json.loads((ckpt / "trainer_state.json").read_text())["global_step"]
    assert killed_at < 60

    again = _cli(job)  # without --resume the folder is refused: nothing gets overwritten
    assert again.wait(timeout=120) == 2 and "--resume" in again.stdout.read()

    resumed = _cli(job, "--resume")
    log, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, log[-3000:]
    assert "resumed from" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 60


def test_ctrl_c_says_how_to_resume(tiny_bert, tiny_data, tmp_path):
    """Ctrl-C (SIGINT) of a `--local` run: the terminal says the checkpoints are kept and gives the
    command that continues the run."""
    out = tmp_path / "run"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1}, train={
        "max_steps": 400, "checkpoint_every": 2, "eval_every": 400})))
    interrupt_after_a_checkpoint(job, out)
    deadline = time.time() + 300

    again = _cli(job, "--local", "--overwrite", "train.checkpoint_every=100000")   # no checkpoint before Ctrl-C
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(again.stdout), daemon=True)
    reader.start()
    while time.time() < deadline and again.poll() is None and not any("training" in line for line in lines):
        time.sleep(0.2)
    os.killpg(again.pid, signal.SIGINT)
    again.wait(timeout=120)
    reader.join(timeout=30)
    log = "".join(lines)
    assert again.returncode == 130 and "holds what it held before this --overwrite run" in log, log[-3000:]


def test_ctrl_c_of_a_ray_run_says_how_to_resume(tiny_bert, tiny_data, tmp_path):
    """A review finding: Ray Train's own SIGINT handler ended fit() with no KeyboardInterrupt, so a
    Ctrl-C through Ray exited 1 without the hint `--local` gives. The terminal's Ctrl-C goes to the
    whole process group, as here; then --resume continues the run."""
    out = tmp_path / "run"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1}, train={
        "max_steps": 400, "checkpoint_every": 2, "eval_every": 400})))
    proc = _cli(job)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            (out / "ray").exists() and latest_good_checkpoint(out / "ray", warn=lambda m: None)):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    log, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, log[-3000:]
    assert f"peft-ray train {job} --resume" in log
    # the run says where its dashboard is, and it is not 8265, where `peft-ray submit` sends jobs (a
    # review finding: a job meant for a cluster landed in a local run's short-lived Ray)
    port = int(re.search(r"Ray dashboard of this run: http://127\.0\.0\.1:(\d+)", log).group(1))
    assert port != 8265



def test_a_dashboard_port_taken_at_the_last_moment_is_tried_again_elsewhere(tmp_path):
    """The CI run of this change met it: another Ray took the dashboard port between free_port's
    check and the bind, and a port named to ray.init gets no retries, so ray.init failed. A fresh
    process (the suite's own Ray may already run in this one)."""
    script = tmp_path / "race.py"
    script.write_text(
        "import socket\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); taken = s.getsockname()[1]\n"
        "import ray, peft_ray.train.ray_start as d\n"
        "real, calls = d.free_port, []\n"
        "def racing(p):\n"
        "    calls.append(p)\n"
        "    return taken if len(calls) == 1 else real(0)   # looked free, then taken\n"
        "d.free_port = racing\n"
        "d.start_local_ray(1)\n"
        "print('ready', len(calls), ray.get(ray.remote(lambda: 1).remote()))\n"
        "import psutil\n"
        "heads = [c for c in psutil.Process().children(recursive=True) if c.name() == 'gcs_server']\n"
        "print('heads', len(heads))   # the failed first try's GCS is gone (a second review's finding)\n"
        "ray.shutdown()\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ready 2 1" in done.stdout and "heads 1" in done.stdout, done.stderr[-3000:]
