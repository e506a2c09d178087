"""tune --resume unpickles Ray Tune's state: only from files nobody else can write."""

from __future__ import annotations

import pytest

from peft_ray.errors import CheckpointError
from peft_ray.security import check_own_pickles


def test_own_private_state_is_accepted(tmp_path):
    (tmp_path / "experiment_state.pkl").write_bytes(b"x")
    (tmp_path / "experiment_state.pkl").chmod(0o644)
    check_own_pickles(tmp_path, "--resume")


def test_state_writable_by_others_is_refused(tmp_path):
    f = tmp_path / "trial" / "state.pkl"
    f.parent.mkdir()
    f.write_bytes(b"x")
    f.chmod(0o666)
    with pytest.raises(CheckpointError, match="refusing to resume .*writable by others.*pickled"):
        check_own_pickles(tmp_path, "--resume")


def test_tune_saves_its_job_without_url_credentials_and_keeps_a_search_on_a_failed_overwrite(tmp_path):
    from peft_ray.spec import load_spec
    from peft_ray.tune.folder import prepared_dir

    out = tmp_path / "search"
    spec = load_spec("jobs/sst2_template_search.yaml",
                     ["scaling.address=http://admin:hunter2@head:8265", f"output.dir={out}"])
    with prepared_dir(spec, resume=False, overwrite=False):
        (out / "search.json").write_text("{}")
    saved = (out / "job.yaml").read_text()
    assert "hunter2" not in saved and "head:8265" in saved
    with pytest.raises(RuntimeError):
        with prepared_dir(spec, resume=False, overwrite=True):
            assert not (out / "search.json").exists()
            raise RuntimeError("the new search failed")
    assert (out / "search.json").read_text() == "{}"


def test_a_fresh_search_never_reads_tune_state_it_did_not_write(tmp_path):
    """Ray Tune's experiment state is cloudpickled: a planted tune/ in a fresh output.dir would be
    unpickled when the leaderboard is read. A fresh search refuses it; --overwrite sets it aside."""
    from peft_ray.spec import load_spec
    from peft_ray.tune.folder import prepared_dir

    out = tmp_path / "search"
    (out / "tune").mkdir(parents=True)
    (out / "tune" / "experiment_state-9999-12-31_23-59-59.json").write_text('{"planted": true}')
    spec = load_spec("jobs/sst2_template_search.yaml", [f"output.dir={out}"])
    with pytest.raises(CheckpointError, match=r"holds search outputs \('tune'\) but no job.yaml"):
        with prepared_dir(spec, resume=False, overwrite=False):
            pass
    (out / "job.yaml").write_text("name: planted\ntune: {metric: accuracy}\n")   # with a job.yaml beside it
    with pytest.raises(CheckpointError, match="already holds a search; pass --resume"):
        with prepared_dir(spec, resume=False, overwrite=False):
            pass
    with prepared_dir(spec, resume=False, overwrite=True):
        assert not (out / "tune").exists()


def test_overwrite_refuses_a_folder_of_other_files(tmp_path):
    from peft_ray.spec import load_spec
    from peft_ray.tune.folder import prepared_dir

    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    spec = load_spec("jobs/sst2_template_search.yaml", [f"output.dir={out}"])
    with pytest.raises(CheckpointError, match="also holds 'thesis.tex', which no peft-ray search writes"):
        with prepared_dir(spec, resume=False, overwrite=True):
            pass
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_a_search_never_starts_over_a_train_run_and_checks_before_its_log(tmp_path):
    from click.testing import CliRunner

    from peft_ray.cli import main
    import yaml

    from peft_ray.spec import load_spec, saved_spec
    from peft_ray.tune.folder import check_can_start_search

    run = tmp_path / "run"                                   # a finished `peft-ray train` run
    (run / "adapter").mkdir(parents=True)
    (run / "job.yaml").write_text("name: default\nmethod: {name: lora}\ntune: null\n")   # as train saves it
    (run / "metrics.json").write_text("{}")
    with pytest.raises(CheckpointError, match="holds a `peft-ray train` run"):
        check_can_start_search(load_spec("jobs/sst2_template_search.yaml", [f"output.dir={run}"]), False, False)

    search = tmp_path / "search"                             # a search whose best adapter was evaluated
    search.mkdir()
    (search / "job.yaml").write_text("name: s\ntune: {metric: accuracy}\n")
    for name in ("search.json", "leaderboard.json", "eval_validation.json", "eval_validation.log"):
        (search / name).write_text("{}")
    check_can_start_search(load_spec("jobs/sst2_template_search.yaml", [f"output.dir={search}"]), False, True)

    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("keep me")
    r = CliRunner().invoke(main, ["tune", "jobs/sst2_template_search.yaml", f"output.dir={home}", "--overwrite"])
    assert r.exit_code == 2 and "also holds 'thesis.tex'" in r.output
    assert sorted(p.name for p in home.iterdir()) == ["thesis.tex"]        # no tune.log left behind


def test_trial_records_writable_by_others_are_refused_on_resume(tmp_path):
    """A security-review finding: a row planted in a trial's history.jsonl decided the leaderboard
    and the exported adapter; trials/ now gets tune/'s ownership check."""
    import yaml

    from peft_ray.spec import load_spec, saved_spec
    from peft_ray.tune.folder import check_can_start_search

    out = tmp_path / "search"
    spec = load_spec("jobs/sst2_template_search.yaml", [f"output.dir={out}"])
    (out / "tune").mkdir(parents=True)
    (out / "job.yaml").write_text(yaml.safe_dump(saved_spec(spec), sort_keys=False))
    history = out / "trials" / "abc_00000" / "history.jsonl"
    history.parent.mkdir(parents=True)
    history.write_text("{}\n")
    history.chmod(0o644)
    check_can_start_search(spec, resume=True, overwrite=False)
    history.chmod(0o666)
    with pytest.raises(CheckpointError, match="history.jsonl: it is owned by another user or writable by others, "
                                              "and a trial's reports there decide the leaderboard"):
        check_can_start_search(spec, resume=True, overwrite=False)


def test_resume_names_each_field_that_differs_from_the_search(tmp_path):
    from peft_ray.spec import load_spec
    from peft_ray.tune.folder import prepared_dir

    out = tmp_path / "search"
    with prepared_dir(load_spec("jobs/sst2_template_search.yaml", [f"output.dir={out}"]), resume=False, overwrite=False):
        (out / "tune").mkdir()
    other = load_spec("jobs/sst2_template_search.yaml", [f"output.dir={out}", "train.seed=7", "tune.num_samples=2"])
    with pytest.raises(CheckpointError) as e:
        with prepared_dir(other, resume=True, overwrite=False):
            pass
    assert "train.seed is 7 here but the search used 0" in str(e.value)
    assert "tune.num_samples is 2 here but the search used 1" in str(e.value)


def test_a_search_that_stopped_before_ray_tune_began_is_rerun_not_resumed(tmp_path):
    """A search refused after its plan was written (a cluster too small, Ctrl-C during Ray's start-up)
    left job.yaml, search.json and tune.log: a plain rerun was refused ('already holds a search') and
    --resume too ('no search to resume'), so only --overwrite got out (a review finding)."""
    from peft_ray.commands.validate import held_by
    from peft_ray.spec import load_spec
    from peft_ray.tune.folder import check_can_start_search

    out = tmp_path / "search"
    out.mkdir()
    (out / "job.yaml").write_text("name: s\ntune: {metric: accuracy}\n")
    for name in ("search.json", "prescreen.json", "tune.log"):
        (out / name).write_text("{}")
    spec = load_spec("jobs/sst2_template_search.yaml", [f"output.dir={out}"])
    assert check_can_start_search(spec, resume=False, overwrite=False) == out
    with pytest.raises(CheckpointError, match="no search to resume"):
        check_can_start_search(spec, resume=True, overwrite=False)
    assert held_by(spec) == ""                               # validate says nothing of --resume either
    (out / "trials").mkdir()                                 # a trial began: that is a search to resume
    with pytest.raises(CheckpointError, match="already holds a search; pass --resume"):
        check_can_start_search(spec, resume=False, overwrite=False)
    assert held_by(spec) == "a search"


def test_a_zero_shot_baseline_or_an_empty_best_folder_is_not_a_search(tmp_path):
    """`peft-ray zero-shot JOB` writes zero_shot.json into output.dir; a search there was then refused
    ('already holds a search; pass --resume') and --resume too ('no search to resume'), so only
    --overwrite, which deletes the baseline, got out (a review finding). An empty best/ did the same."""
    from peft_ray.spec import load_spec
    from peft_ray.tune.folder import check_can_start_search

    out = tmp_path / "search"
    out.mkdir()
    (out / "zero_shot.json").write_text("{}")
    (out / "eval_validation.json").write_text("{}")
    spec = load_spec("jobs/sst2_template_search.yaml", [f"output.dir={out}"])
    assert check_can_start_search(spec, resume=False, overwrite=False) == out
    (out / "job.yaml").write_text("name: s\ntune: {metric: accuracy}\n")
    (out / "best").mkdir()
    assert check_can_start_search(spec, resume=False, overwrite=False) == out
    (out / "best" / "metrics.json").write_text("{}")         # best_job.yaml's run: a search was here
    with pytest.raises(CheckpointError, match="already holds a search; pass --resume"):
        check_can_start_search(spec, resume=False, overwrite=False)


def test_overwrite_never_deletes_the_run_of_best_job_yaml(tmp_path):
    """best_job.yaml trains into <search>/best: `tune --overwrite` deleted that run with the search,
    silently (a review finding). It is refused, naming the folder, and nothing is touched."""
    from peft_ray.spec import load_spec
    from peft_ray.tune.folder import prepared_dir

    out = tmp_path / "search"
    (out / "tune").mkdir(parents=True)
    (out / "best" / "adapter").mkdir(parents=True)
    (out / "job.yaml").write_text("name: s\ntune: {metric: accuracy}\n")
    (out / "best" / "metrics.json").write_text("{}")
    spec = load_spec("jobs/sst2_template_search.yaml", [f"output.dir={out}"])
    with pytest.raises(CheckpointError, match=r"best holds the run of best_job.yaml .* move it out"):
        with prepared_dir(spec, resume=False, overwrite=True):
            pass
    assert sorted(p.name for p in out.iterdir()) == ["best", "job.yaml", "tune"]
    (out / "best" / "metrics.json").unlink()
    (out / "best" / "adapter").rmdir()                       # an empty best/ holds nothing to lose
    with prepared_dir(spec, resume=False, overwrite=True):
        pass


def test_ctrl_c_before_ray_tune_took_over_exits_130_and_says_how_to_go_on(tmp_path, monkeypatch):
    """Ctrl-C while Ray started printed click's 'Aborted!' and exited 1 (a review finding)."""
    from click.testing import CliRunner

    from peft_ray.cli import main
    from peft_ray.tune import runner

    def interrupted(spec, resume, overwrite, **_):
        from peft_ray.tune.folder import prepared_dir

        with prepared_dir(spec, resume, overwrite) as out:
            (out / "search.json").write_text("{}")            # the plan was written; Ray was starting
            raise KeyboardInterrupt
    monkeypatch.setattr(runner, "run_tune", interrupted)
    cmd = ["tune", "jobs/sst2_template_search.yaml", f"output.dir={tmp_path / 's'}"]
    r = CliRunner().invoke(main, cmd)
    assert r.exit_code == 130 and "interrupted before the search began. Start it again with:" in r.output, r.output
    assert f"peft-ray tune jobs/sst2_template_search.yaml output.dir={tmp_path / 's'}\n" in r.output
    (tmp_path / "s" / "tune").mkdir()
    r = CliRunner().invoke(main, cmd)
    assert r.exit_code == 2 and "already holds a search; pass --resume" in r.output
    r = CliRunner().invoke(main, [*cmd, "--resume"])
    assert r.exit_code == 130 and "Continue the search with:" in r.output and "--resume" in r.output, r.output
