"""`train --local` as several ranks (scaling.local_ranks, train/local_ranks.py): rank 0 in this
process, the others as child processes, real gloo collectives and DeepSpeed ZeRO shards, no Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.spec import validate_spec
from peft_ray.train.local import run_local
from tests.conftest import job_dict
from tests.train.test_driver_kill import interrupt_after_a_checkpoint

TRAIN = {"max_steps": 6, "checkpoint_every": 3, "eval_every": 6}
RANKS = {"num_workers": 2, "local_ranks": 2}


@pytest.fixture(autouse=True)
def two_ranks(monkeypatch):
    """Two ranks whatever this machine's cores (the layout is decided in this process)."""
    monkeypatch.setattr("peft_ray.train.local_ranks.cores", lambda: 2)


def _rank_children() -> list:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "peft_ray.train.rank_child" in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def _no_rank_left(timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while _rank_children() and time.time() < deadline:
        time.sleep(0.2)
    return not _rank_children()


def test_two_ranks_write_one_checkpoint_and_resume_to_the_same_result(tiny_bert, tiny_data, tmp_path):
    """Each rank's ZeRO shard, RNG state and manifest land in one checkpoint folder (as Ray merges
    its workers' folders); job.yaml records the layout; a run cut after its first checkpoint and
    resumed ends where the uninterrupted run ends."""
    full = run_local(validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "full", train=TRAIN, scaling=RANKS)))
    ckpt = tmp_path / "full" / "checkpoints" / "checkpoint_00000006"
    names = {p.name for p in ckpt.rglob("*")}
    assert {"rng_rank0.safetensors", "rng_rank1.safetensors", "MANIFEST.rank0.json", "MANIFEST.rank1.json",
            "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= names
    assert json.loads((ckpt / "trainer_state.json").read_text())["world_size"] == 2
    assert not list((tmp_path / "full" / "checkpoints").glob(".staging-*"))
    scaling = yaml.safe_load((tmp_path / "full" / "job.yaml").read_text())["scaling"]
    assert (scaling["num_workers"], scaling["torch_threads"]) == (2, 1)

    cut = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "cut", train=TRAIN, scaling=RANKS))
    run_local(cut)
    import shutil

    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "checkpoint_00000006")
    resumed = run_local(cut, resume=True)
    assert resumed["step"] == 6
    assert resumed["accuracy"] == pytest.approx(full["accuracy"], abs=1e-9)
    assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-5)
    assert _no_rank_left()


def test_a_rank_that_dies_is_named_and_leaves_no_process(tiny_bert, tiny_data, tmp_path, monkeypatch):
    """Rank 1 dies hard mid-run: rank 0's next collective fails, and the error names the rank and
    its exit code instead of gloo's "connection closed"; no rank process is left behind."""
    monkeypatch.setenv("PEFT_RAY_FAIL_AT_STEP", "2")
    monkeypatch.setenv("PEFT_RAY_FAIL_RANK", "1")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "run", train=TRAIN, scaling=RANKS)))
    r = CliRunner().invoke(main, ["train", str(job), "--local"])
    assert r.exit_code == 2, r.output
    assert "rank 1 of the --local run stopped (exit code 17): it printed no error" in r.output
    assert _no_rank_left()


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a subprocess run gets two ranks on two cores")
def test_ctrl_c_stops_every_rank_and_resume_finishes(tiny_bert, tiny_data, tmp_path):
    """Ctrl-C reaches the terminal's process group; the ranks sit in their own session, so rank 0
    stops them (no staging folder or process left), says how to resume, and --resume finishes."""
    out = tmp_path / "run"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, scaling=RANKS, train={
        "max_steps": 100, "checkpoint_every": 2, "eval_every": 100})))
    interrupt_after_a_checkpoint(job, out)
    assert _no_rank_left()
    assert not list((out / "checkpoints").glob(".staging-*"))
    resumed = subprocess.run([sys.executable, "-m", "peft_ray.cli", "train", str(job), "--local", "train.lr=0.01",
                              "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert json.loads((out / "metrics.json").read_text())["step"] == 100
