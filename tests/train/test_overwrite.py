"""--overwrite loses nothing when the new run fails (peft_ray/replaced.py), on a real --local run."""

from __future__ import annotations

import pytest

from peft_ray.errors import CheckpointError
from peft_ray.replaced import ASIDE
from peft_ray.spec import validate_spec
from peft_ray.train.local import run_local
from peft_ray.train.recipe import NonFiniteLoss
from tests.conftest import job_dict


def _tree(root):
    """Every file under `root` but the appended log, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "train.log"}


def test_a_failed_overwrite_puts_the_previous_run_back(tiny_bert, tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    spec = validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1}))
    run_local(spec, bar="none")
    (out / "train.log").write_text("the first run's log\n")
    before = _tree(out)
    assert "adapter/adapter_config.json" in before and any(k.startswith("checkpoints/") for k in before)

    other = validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                   train={"seed": 7, "nan_policy": "stop"}))
    monkeypatch.setenv("PEFT_RAY_NAN_AT_STEP", "3")           # the new run fails after it has written checkpoints
    with pytest.raises(NonFiniteLoss):
        run_local(other, overwrite=True, bar="none")
    assert _tree(out) == before                              # every file as it was, byte for byte
    assert not (out / ASIDE).exists()

    monkeypatch.delenv("PEFT_RAY_NAN_AT_STEP")
    run_local(other, overwrite=True, bar="none")             # a run that finishes replaces it
    assert not (out / ASIDE).exists() and "seed: 7" in (out / "job.yaml").read_text()
    assert (out / "train.log").read_text().startswith("the first run's log")   # the log is history, kept


def test_an_interrupted_overwrite_is_refused_until_the_user_decides(tiny_bert, tiny_data, tmp_path):
    out = tmp_path / "run"
    (out / ASIDE).mkdir(parents=True)                        # what a killed --overwrite leaves
    (out / ASIDE / "job.yaml").write_text("name: tiny\n")
    (out / "job.yaml").write_text("name: tiny\n")
    spec = validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1}))
    for flags in ({}, {"resume": True}):
        with pytest.raises(CheckpointError, match="interrupted --overwrite"):
            run_local(spec, bar="none", **flags)
    run_local(spec, overwrite=True, bar="none")              # --overwrite again: the new run replaces both
    assert not (out / ASIDE).exists() and (out / "adapter" / "adapter_config.json").exists()


def test_a_killed_overwrite_of_an_empty_folder_can_be_resumed(tiny_bert, tiny_data, tmp_path):
    """A review finding: `--overwrite` on a new folder made an empty .replaced/; a run killed
    there (preemption, OOM) could not be resumed, and the refusal told the user to --overwrite,
    which loses the killed run's checkpoints. Nothing set aside is nothing to restore."""
    import subprocess
    import sys

    import yaml

    out = tmp_path / "run"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                           train={"max_steps": 6, "checkpoint_every": 2})))
    killed = subprocess.run([sys.executable, "-m", "peft_ray.cli", "train", str(job), "--local", "--overwrite", "-q"],
                            env={**__import__("os").environ, "PEFT_RAY_FAIL_AT_STEP": "5"}, capture_output=True)
    assert killed.returncode != 0 and (out / "checkpoints").is_dir()
    assert not (out / ASIDE).exists()                        # nothing was set aside, so no folder says so
    (out / ASIDE).mkdir()                                    # as the old code left it
    spec = validate_spec(yaml.safe_load(job.read_text()))
    run_local(spec, resume=True, bar="none")
    assert not (out / ASIDE).exists() and (out / "adapter" / "adapter_config.json").exists()


def test_a_file_named_like_the_aside_folder_is_a_clear_refusal(tiny_bert, tiny_data, tmp_path):
    """A diff-review finding: a regular file `.replaced` gave a NotADirectoryError traceback."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ASIDE).write_text("hi")
    spec = validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1}))
    with pytest.raises(CheckpointError, match="interrupted --overwrite"):
        run_local(spec, bar="none")
    assert (out / ASIDE).read_text() == "hi"


@pytest.mark.parametrize("target", ["victim", ".."])
def test_a_planted_aside_link_is_refused_before_anything_moves(tiny_bert, tiny_data, tmp_path, target):
    """A security-review finding: a shared run folder holding `.replaced -> ~/thesis` (or `-> ..`,
    every sibling run) had a failed or Ctrl-C'd --overwrite move the user's own files into it
    through the link, and a plain start's advice was to pass --overwrite."""
    from peft_ray.tune.folder import check_can_start_search

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    out = tmp_path / "runs" / "shared"
    out.mkdir(parents=True)
    (out / "job.yaml").write_text("name: tiny\n")
    (out / ASIDE).symlink_to(victim if target == "victim" else "..")
    spec = validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1}))
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(CheckpointError, match="'.replaced' is a symbolic link"):
            run_local(spec, bar="none", **flags)
    with pytest.raises(CheckpointError, match="symbolic link"):
        check_can_start_search(spec, resume=False, overwrite=True)
    assert (victim / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in out.iterdir()) == [ASIDE, "job.yaml"]


def test_a_job_file_in_its_own_output_dir_is_never_replaced(tiny_bert, tiny_data, tmp_path):
    """A new-user-review finding: `exp1/job.yaml` with `output.dir: exp1` was taken for a run that
    never saved, and `--overwrite` replaced the user's job with the resolved one (comments gone, an
    override made permanent). The run's own job.yaml, given back with --resume, still continues it."""
    import yaml
    from click.testing import CliRunner

    from peft_ray.cli import main
    from peft_ray.errors import SpecError

    exp = tmp_path / "exp1"
    exp.mkdir()
    job = exp / "job.yaml"
    text = "# my experiment\n" + yaml.safe_dump(job_dict(tiny_bert, tiny_data, exp, scaling={"num_workers": 1}))
    job.write_text(text)
    for flags in ([], ["--overwrite"], ["--resume"]):
        r = CliRunner().invoke(main, ["train", str(job), "--local", "train.max_steps=2", *flags])
        assert r.exit_code == 2 and "is output.dir/job.yaml" in r.output, r.output
    r = CliRunner().invoke(main, ["tune", str(job), "--overwrite"])
    assert r.exit_code == 2 and "is output.dir/job.yaml" in r.output, r.output
    assert job.read_text() == text and sorted(p.name for p in exp.iterdir()) == ["job.yaml"]
    with pytest.raises(SpecError, match="output.dir"):
        validate_spec(job_dict(tiny_bert, tiny_data, ""))

    run = tmp_path / "run"                       # a run's own job.yaml continues it
    spec = validate_spec(job_dict(tiny_bert, tiny_data, run, scaling={"num_workers": 1},
                                  train={"max_steps": 4, "checkpoint_every": 2}))
    run_local(spec, bar="none")
    (run / "train.log").write_text("the run's log\n")
    r = CliRunner().invoke(main, ["train", str(run / "job.yaml"), "--local", "--resume", "train.max_steps=6"])
    assert r.exit_code == 0, r.output


def test_a_refused_start_leaves_the_runs_log_alone(tiny_bert, tiny_data, tmp_path):
    """`train` without --resume/--overwrite on a finished run is refused; it appended a header to
    that run's train.log first (the log opened before the check)."""
    import yaml
    from click.testing import CliRunner

    from peft_ray.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "job.yaml").write_text("name: tiny\n")
    (out / "metrics.json").write_text("{}")
    (out / "train.log").write_text("the run's own log\n")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1})))
    r = CliRunner().invoke(main, ["train", str(job), "--local"])
    assert r.exit_code != 0 and "already holds a run" in r.output
    assert (out / "train.log").read_text() == "the run's own log\n"


def test_a_dashboard_url_in_ray_address_is_named_before_anything_is_written(tiny_bert, tiny_data, tmp_path,
                                                                             monkeypatch):
    """docs/cluster.md exports RAY_ADDRESS=http://...:8265 for submit; `train` then died in Ray's
    ValueError traceback after writing job.yaml."""
    import yaml
    from click.testing import CliRunner

    from peft_ray.cli import main

    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "run")))
    r = CliRunner().invoke(main, ["train", str(job)])
    assert r.exit_code != 0 and "$RAY_ADDRESS 'http://127.0.0.1:8265' is a Ray dashboard URL" in r.output
    assert "peft-ray submit JOB.yaml --address http://127.0.0.1:8265" in r.output
    assert not (tmp_path / "run").exists()
    r = CliRunner().invoke(main, ["train", str(job), "--local", "-q", "train.max_steps=1"])   # no Ray: no matter
    assert r.exit_code == 0, r.output
