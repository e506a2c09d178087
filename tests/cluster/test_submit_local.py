"""`peft-ray submit` on the laptop side, no cluster: token discovery, addresses, what the
upload holds, and bad input failing before any network call."""

from __future__ import annotations

import socket
import time

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import JobError
from peft_ray.submit import auth
from peft_ray.submit.client import probe, resolve_address
from peft_ray.submit.job import parse_env, submission_id
from peft_ray.submit.upload import plan_upload
from tests.cluster.conftest import free_ports
from tests.conftest import job_dict

SECRET = "s3cr3t-token-value-0123456789"


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    for name in (auth.TOKEN_ENV, auth.TOKEN_PATH_ENV, auth.MODE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))   # no ~/.ray/auth_token
    return tmp_path


def test_token_precedence_follows_ray(no_token, monkeypatch):
    assert auth.find_token() is None
    default = no_token / "home" / ".ray" / "auth_token"
    default.parent.mkdir(parents=True)
    default.write_text(f"  {SECRET}-default\n")
    assert auth.find_token().value == f"{SECRET}-default"          # whitespace stripped, like Ray
    named = no_token / "tok"
    named.write_text(f"{SECRET}-path")
    monkeypatch.setenv(auth.TOKEN_PATH_ENV, str(named))
    assert auth.find_token().value == f"{SECRET}-path"
    monkeypatch.setenv(auth.TOKEN_ENV, SECRET)
    tok = auth.find_token()
    assert tok.value == SECRET and tok.source == "$RAY_AUTH_TOKEN"
    assert SECRET not in repr(tok) and tok.headers() == {"Authorization": f"Bearer {SECRET}"}


def test_token_file_named_but_unreadable_is_an_error(no_token, monkeypatch):
    monkeypatch.setenv(auth.TOKEN_PATH_ENV, str(no_token / "missing"))
    with pytest.raises(JobError, match="cannot read the Ray token file"):
        auth.find_token()
    monkeypatch.delenv(auth.TOKEN_PATH_ENV)
    monkeypatch.setenv(auth.MODE_ENV, "token")
    with pytest.raises(JobError, match="RAY_AUTH_MODE=token but no token"):
        auth.require_token_if_token_mode(auth.find_token())


def test_addresses(monkeypatch):
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_address(None) == "http://127.0.0.1:8265"
    assert resolve_address("head:8265/") == "http://head:8265"
    monkeypatch.setenv("RAY_ADDRESS", "https://ray.example:443")
    assert resolve_address(None) == "https://ray.example:443"
    with pytest.raises(JobError, match="not to the Ray Client"):
        resolve_address("ray://head:10001")


@pytest.fixture
def silent_server():
    """A port that accepts TCP connections (kernel backlog) but never answers: a hung dashboard."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield f"http://127.0.0.1:{srv.getsockname()[1]}", srv


def _was_contacted(srv: socket.socket) -> bool:
    srv.setblocking(False)
    try:
        srv.accept()[0].close()
        return True
    except BlockingIOError:
        return False


def test_hung_or_closed_address_fails_fast_with_a_message(silent_server):
    url, _ = silent_server
    t0 = time.monotonic()
    with pytest.raises(JobError, match=f"no answer from the Ray dashboard at {url} within 1 s"):
        probe(url, None, timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    (port,) = free_ports(1)                                                  # nothing listens there
    with pytest.raises(JobError, match="cannot reach the Ray dashboard"):
        probe(f"http://127.0.0.1:{port}", None, timeout_s=1.0)


def test_upload_plan_excludes_outputs_vcs_large_and_ignored(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    for d in (".git", "runs/old", "data_private"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "f.txt").write_text("x")
    (tmp_path / ".gitignore").write_text("data_private/\n")
    with open(tmp_path / "pkg" / "big.bin", "wb") as f:   # sparse: st_size 11 MiB, no disk used
        f.truncate(11 * 2**20)
    plan = plan_upload(tmp_path)
    assert {plan.relative(p) for p in plan.files} == {".gitignore", "pkg/code.py"}
    assert plan.dropped_large == [("pkg/big.bin", 11 * 2**20)]
    assert "/pkg/big.bin" in plan.excludes and "runs/" in plan.excludes and ".git" in plan.excludes
    with pytest.raises(JobError, match="would not be uploaded"):
        plan.check_travels(tmp_path / "data_private" / "f.txt", "data")
    plan.check_travels(tmp_path / "pkg" / "code.py", "data")        # travels: fine


def test_env_and_submission_id():
    assert parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(JobError, match="readable by anyone"):
        parse_env([f"RAY_AUTH_TOKEN={SECRET}"])
    sid = submission_id("sst2-prompt")
    assert sid.startswith("peft-ray-sst2-prompt-20") and sid != submission_id("sst2-prompt")


def _workdir(tmp_path, tiny_bert, tiny_data, **sections):
    wd = tmp_path / "wd"
    (wd / "jobs").mkdir(parents=True)
    job = wd / "jobs" / "tiny.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out", **sections)))
    return wd, job


def test_dry_run_validates_and_shows_the_entrypoint(tmp_path, tiny_bert, tiny_data):
    wd, job = _workdir(tmp_path, tiny_bert, tiny_data)
    r = CliRunner().invoke(main, ["submit", str(job), "train.max_steps=2", "--working-dir", str(wd), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "entrypoint: peft-ray train jobs/tiny.yaml train.max_steps=2" in r.output


@pytest.mark.parametrize("override, message", [
    ("train.max_stepz=2", "did you mean 'max_steps'"),          # schema
    ("data.train=nope.parquet", "data.train: no file matches"),  # pre-flight on local data
    ("output.dir=ftp://host/runs", "output.dir: 'ftp://' is not a supported storage scheme"),
])
def test_bad_input_fails_on_the_laptop_before_any_request(tmp_path, tiny_bert, tiny_data, silent_server,
                                                         override, message):
    wd, job = _workdir(tmp_path, tiny_bert, tiny_data)
    url, srv = silent_server
    r = CliRunner().invoke(main, ["submit", str(job), override, "--working-dir", str(wd), "--address", url])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not _was_contacted(srv)


def test_job_file_must_travel_with_the_working_dir(tmp_path, tiny_bert, tiny_data):
    wd, _ = _workdir(tmp_path, tiny_bert, tiny_data)
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out")))
    r = CliRunner().invoke(main, ["submit", str(outside), "--working-dir", str(wd), "--dry-run"])
    assert r.exit_code == 2 and "outside the working dir" in r.output


def test_the_upload_keeps_rays_packaging_chatter_off_the_terminal():
    """peft-ray prints its own upload plan; while Ray's client uploads, its per-file INFO lines and
    its ".git is now ignored" warning stay off, and the levels come back afterwards."""
    import logging

    from peft_ray.submit.client import quiet_upload

    names = ("ray._private.runtime_env.packaging", "ray.dashboard.modules.dashboard_sdk",
             "ray._private.runtime_env.working_dir")
    before = [logging.getLogger(n).level for n in names]
    with quiet_upload():
        assert not logging.getLogger(names[0]).isEnabledFor(logging.INFO)
        assert not logging.getLogger(names[1]).isEnabledFor(logging.INFO)
        assert not logging.getLogger(names[2]).isEnabledFor(logging.WARNING)
        assert logging.getLogger(names[0]).isEnabledFor(logging.WARNING)
    assert [logging.getLogger(n).level for n in names] == before


def test_an_unreachable_address_says_which_variable_it_came_from(monkeypatch):
    """RAY_ADDRESS is exported for `train` (a cluster address) and read by `jobs` too."""
    from click.testing import CliRunner

    from peft_ray.cli import main

    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    r = CliRunner().invoke(main, ["jobs", "list", "--timeout", "2"])
    assert r.exit_code == 2 and "http://127.0.0.1:9 (from $RAY_ADDRESS)" in r.output


def test_submit_refuses_a_relative_path_out_of_the_working_dir_and_resume_with_overwrite(tmp_path, tiny_bert,
                                                                                           tiny_data):
    """`data.root=../data` passed the checks here (resolved against this machine) and failed on the
    cluster, where it resolves against the job's copy of the working dir; `--resume --overwrite`
    cost an upload and a job before `train` refused it."""
    work = tmp_path / "work"
    (work / "jobs").mkdir(parents=True)
    job = work / "jobs" / "tiny.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out")))
    r = CliRunner().invoke(main, ["submit", str(job), f"data.root=../{tiny_data.name}", "--working-dir", str(work),
                                  "--dry-run"])
    assert r.exit_code == 2
    assert f"data.root '../{tiny_data.name}' is relative and leads out of the working dir" in r.output
    r = CliRunner().invoke(main, ["submit", str(job), "--working-dir", str(work), "--dry-run", "--resume",
                                  "--overwrite"])
    assert r.exit_code == 2 and "pass one of them" in r.output
    r = CliRunner().invoke(main, ["submit", str(job), "--working-dir", str(work), "--dry-run", "--env", "A=1"])
    assert r.exit_code == 0, r.output
    assert "submission id: peft-ray-tiny-" in r.output and "A=1" in r.output
    assert "job_file='jobs/tiny.yaml'" in r.output
