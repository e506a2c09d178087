"""Checkpoint staging folders of Ray workers: what a worker killed mid-save leaves in the temp
folder is swept by the next save on that machine, and nothing else is."""

from __future__ import annotations

import os
import subprocess
import sys

from peft_ray.train.report import STAGING_PREFIX, RayReporter, sweep_dead_staging


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_workers_staging_folder_is_swept_and_nothing_else(tmp_path):
    dead = tmp_path / f"{STAGING_PREFIX}{_dead_pid()}-abc"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "mp_rank_00_model_states.pt").write_bytes(b"x" * 10)
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-def"
    live.mkdir()
    target = tmp_path / "keep"
    target.mkdir()
    (target / "f").write_text("mine")
    link = tmp_path / f"{STAGING_PREFIX}{_dead_pid()}-lnk"
    link.symlink_to(target)
    other = tmp_path / "peft-ray-ckpt-old_style"   # no pid in the name: not ours to judge
    other.mkdir()

    sweep_dead_staging(str(tmp_path))

    assert not dead.exists()
    assert live.is_dir() and other.is_dir()
    assert link.is_symlink() and (target / "f").read_text() == "mine"


def test_the_ray_reporter_stages_under_its_own_pid(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    stale = tmp_path / f"{STAGING_PREFIX}{_dead_pid()}-old"
    stale.mkdir()
    with RayReporter().staging_dir() as tmp:
        assert os.path.basename(tmp).startswith(f"{STAGING_PREFIX}{os.getpid()}-")
        assert not stale.exists()
    assert not os.path.exists(tmp)
