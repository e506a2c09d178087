"""An output.dir that cannot hold a run fails before any work, and nothing is written."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import CheckpointError
from peft_ray.storage import check_output_dir
from tests.conftest import job_dict


def _run(tmp_path, tiny_bert, tiny_data, out, cmd):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out)))
    before = sorted(p.name for p in tmp_path.iterdir())
    r = CliRunner().invoke(main, [cmd, str(job)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before       # nothing written
    return r.output


@pytest.mark.parametrize("cmd", ["validate", "train", "zero-shot"])
def test_output_dir_that_is_a_file(tmp_path, tiny_bert, tiny_data, cmd):
    out = tmp_path / "runs"
    out.write_text("not a folder")
    msg = _run(tmp_path, tiny_bert, tiny_data, out, cmd)
    assert f"output.dir '{out}' is an existing file, not a folder" in msg
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("cmd", ["validate", "train", "zero-shot"])
def test_output_dir_under_proc(tmp_path, tiny_bert, tiny_data, cmd):
    msg = _run(tmp_path, tiny_bert, tiny_data, "/proc/peft-ray-run", cmd)
    assert "output.dir '/proc/peft-ray-run' is on proc (/proc), a kernel pseudo-filesystem" in msg


def test_output_dir_below_a_file(tmp_path, tiny_bert, tiny_data):
    (tmp_path / "f").write_text("x")
    msg = _run(tmp_path, tiny_bert, tiny_data, tmp_path / "f" / "run", "validate")
    assert f"'{tmp_path / 'f'}' is a file, so no folder can be made below it" in msg


def test_unwritable_output_dir(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "access", lambda path, mode: False)   # root passes every permission check
    with pytest.raises(CheckpointError, match="not writable by this user"):
        check_output_dir(str(tmp_path / "run"))


def test_good_and_remote_output_dirs_pass(tmp_path):
    check_output_dir(str(tmp_path / "new" / "run"))
    check_output_dir(str(tmp_path))
    check_output_dir("s3://bucket/runs/x")
    assert not (tmp_path / "new").exists()


def _spec(tiny_bert, tiny_data, out):
    from peft_ray.spec import validate_spec

    return validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1}))


def test_overwrite_replaces_only_a_runs_own_files(tmp_path, tiny_bert, tiny_data):
    """--overwrite sets everything in output.dir aside and deletes it once the run is done: a folder
    holding anything no run writes (a home folder, a project) is refused, naming what is there."""
    from peft_ray.train.run_dir import check_can_start

    out = tmp_path / "home"
    (out / "src").mkdir(parents=True)
    (out / "thesis.tex").write_text("keep me")
    with pytest.raises(CheckpointError, match="also holds 'src', 'thesis.tex', which no peft-ray run writes"):
        check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=True)
    check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=False)  # a plain start touches neither
    (out / "job.yaml").write_text("name: tiny\n")
    (out / "eval_test.json").write_text("{}")
    with pytest.raises(CheckpointError, match="also holds 'src', 'thesis.tex'"):   # a run folder with extra files too
        check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=True)


def test_run_outputs_without_their_job_yaml_are_not_written_over(tmp_path, tiny_bert, tiny_data):
    from peft_ray.train.run_dir import check_can_start

    out = tmp_path / "run"
    (out / "adapter").mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    (out / "train.log").write_text("log\n")
    with pytest.raises(CheckpointError, match=r"holds run outputs \('adapter', 'metrics.json'\) but no job.yaml"):
        check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=False)
    check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=True)
    (out / "adapter").rmdir()
    (out / "metrics.json").unlink()
    check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=False)  # only the CLI's own log


@pytest.mark.parametrize("planted", ["fifo", "deep"])
def test_a_planted_job_yaml_is_read_as_data(tmp_path, tiny_bert, tiny_data, planted):
    """A FIFO blocked the start forever; a deeply nested job.yaml crashed it with a RecursionError."""
    import os

    from peft_ray.train.run_dir import check_can_start

    out = tmp_path / "run"
    out.mkdir()
    if planted == "fifo":
        os.mkfifo(out / "job.yaml")
    else:
        (out / "job.yaml").write_text("name: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(CheckpointError, match="already holds a run"):
        check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=False)


def test_what_other_commands_and_killed_writers_leave_is_the_folders_own(tmp_path, tiny_bert, tiny_data):
    """zero-shot before the first run, eval's log beside a run, a killed writer's temp file, Finder's
    .DS_Store: none of them is a reason to refuse a start or an --overwrite."""
    from peft_ray.train.run_dir import check_can_start

    out = tmp_path / "run"
    out.mkdir()
    (out / "zero_shot.json").write_text("{}")
    check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=False)
    for name in ("job.yaml", "eval_validation.json", "eval_validation.log", ".adapter.0123456789abcdef.tmp",
                 ".metrics.json.0123456789abcdef.tmp", ".adapter.0123456789abcdef.old", ".DS_Store"):
        (out / name).write_text("x")
    check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=True)
    from peft_ray.storage import staging_dir

    staging = staging_dir(out / "adapter")                           # a save killed inside it leaves its folder
    staging.__enter__().mkdir()
    check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=True)
    for name in (".env.old", ".thesis-draft.tmp"):                   # a user's dotfiles are not temp files
        (out / name).write_text("keep")
        with pytest.raises(CheckpointError, match=f"also holds '{name}'"):
            check_can_start(_spec(tiny_bert, tiny_data, out), resume=False, overwrite=True)
        (out / name).unlink()


@pytest.mark.parametrize("resume, overwrite", [(True, False), (False, True)])
def test_a_run_entry_planted_as_a_link_is_refused(tmp_path, tiny_bert, tiny_data, resume, overwrite):
    """`tensorboard -> elsewhere` in a run folder had --resume write event files outside output.dir."""
    from peft_ray.train.run_dir import check_can_start

    out, elsewhere = tmp_path / "run", tmp_path / "victim"
    (out / "ray").mkdir(parents=True)
    elsewhere.mkdir()
    (out / "job.yaml").write_text("name: tiny\nmethod: {name: prompt_tuning}\n")
    (out / "tensorboard").symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match="'tensorboard' is a symbolic link; a run writes only inside its folder"):
        check_can_start(_spec(tiny_bert, tiny_data, out), resume=resume, overwrite=overwrite)
    assert not list(elsewhere.iterdir())


def test_zero_shot_writes_a_uri_output_dir_through_storage_not_a_local_folder(tmp_path, monkeypatch):
    """As a local path `s3://bucket/run` was a folder `s3:` in the current one."""
    from peft_ray.commands.zero_shot import output_target
    from peft_ray.spec import validate_spec
    from tests.conftest import job_dict

    monkeypatch.chdir(tmp_path)
    spec = validate_spec(job_dict(tmp_path / "m", tmp_path / "d", "s3://bucket/run"))
    assert output_target(spec, None, False) == "s3://bucket/run/zero_shot.json"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("via", ["output.dir", "--output"])
def test_zero_shot_replaces_a_planted_link_never_its_target(tiny_bert, tiny_data, tmp_path, monkeypatch, via):
    """A review finding: writing through Location.at resolved the final link and replaced its target."""
    import json

    import peft_ray.zero_shot

    monkeypatch.setattr(peft_ray.zero_shot, "zero_shot_eval", lambda spec, batch_size: {"task": "classification", "accuracy": 0.5})
    target = tmp_path / "target.json"
    target.write_text("secret")
    out = tmp_path / "zs"
    out.mkdir()
    link = out / "zero_shot.json"
    link.symlink_to(target)
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps(job_dict(tiny_bert, tiny_data, out)))
    if via != "--output":   # a link is not zero-shot's own file: kept unless --overwrite
        r = CliRunner().invoke(main, ["zero-shot", str(job)])
        assert r.exit_code == 2 and "holds a file zero-shot did not write" in r.output, r.output
    args = ["zero-shot", str(job)] + (["--output", str(link)] if via == "--output" else []) + ["--overwrite"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert target.read_text() == "secret"
    assert not link.is_symlink() and json.loads(link.read_text())["accuracy"] == 0.5


def test_zero_shot_keeps_the_baseline_of_another_template_without_overwrite(tiny_bert, tiny_data, tmp_path,
                                                                              monkeypatch):
    """A second template's zero-shot replaced the first's zero_shot.json without a word (a review
    finding); a rerun of the same job replaces its own."""
    import json

    import peft_ray.zero_shot

    monkeypatch.setattr(peft_ray.zero_shot, "zero_shot_eval", lambda spec, batch_size: {
        "task": "classification", "accuracy": 0.5, **peft_ray.zero_shot.scored_what(spec)})
    out = tmp_path / "zs"
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps(job_dict(tiny_bert, tiny_data, out)))
    assert CliRunner().invoke(main, ["zero-shot", str(job)]).exit_code == 0
    assert CliRunner().invoke(main, ["zero-shot", str(job)]).exit_code == 0          # the same: a rerun
    r = CliRunner().invoke(main, ["zero-shot", str(job), "template.text=\"Review {text}\""])
    assert r.exit_code == 2 and "zero_shot.json already holds the score of another job (template " in r.output, r.output
    assert json.loads((out / "zero_shot.json").read_text())["template"] != "Review {text}"
    old_style = {"accuracy": 0.4, "task": "classification", "zero_shot": True, "template": "Review {text}"}
    (out / "zero_shot.json").write_text(json.dumps(old_style))   # written before the other keys were kept
    r = CliRunner().invoke(main, ["zero-shot", str(job), "template.text=\"Review {text}\""])
    assert r.exit_code == 0, r.output                                 # its rerun replaces it
    r = CliRunner().invoke(main, ["zero-shot", str(job), "template.text=\"Review {text}\"", "--overwrite"])
    assert r.exit_code == 0 and json.loads((out / "zero_shot.json").read_text())["template"] == "Review {text}"
    # the task's own fields are part of what was scored (a generation task's decoding, too)
    r = CliRunner().invoke(main, ["zero-shot", str(job), "template.text=\"Review {text}\"", "task.head=verbalizer"])
    assert r.exit_code == 2 and "(task_fields.head auto there, verbalizer here)" in r.output, r.output


@pytest.fixture(scope="module")
def run_dir(tiny_bert, tiny_data, tmp_path_factory):
    from peft_ray.spec import validate_spec
    from peft_ray.train.local import run_local

    out = tmp_path_factory.mktemp("run") / "run"
    run_local(validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                     train={"max_steps": 1, "eval_every": 1})))
    return out


@pytest.mark.parametrize("cmd", ["eval", "predict", "zero-shot"])
def test_an_output_uri_or_unwritable_output_is_refused_before_the_model_loads(run_dir, tiny_data, tmp_path,
                                                                              monkeypatch, cmd):
    import peft_ray.inference
    import peft_ray.zero_shot

    def no_model(*a, **k):
        raise AssertionError("the model loaded")
    monkeypatch.setattr(peft_ray.inference, "load_adapter", no_model)
    monkeypatch.setattr(peft_ray.zero_shot, "zero_shot_eval", no_model)
    monkeypatch.chdir(tmp_path)
    data = str(tiny_data / "validation.parquet")
    args = {"eval": ["eval", str(run_dir), "--data", data, "--local"],
            "predict": ["predict", str(run_dir), "--input", data, "--local"],
            "zero-shot": ["zero-shot", str(run_dir / "job.yaml")]}[cmd]
    for output, why in [("s3://bucket/run/m.jsonl", "is a URI; --output names a local file"),
                        ("/proc/self/m.jsonl", "a kernel pseudo-filesystem"),
                        (str(tmp_path / "f" / "m.jsonl"), "is an existing file, not a folder")]:
        (tmp_path / "f").write_text("a file")
        r = CliRunner().invoke(main, [*args, "--output", output])
        assert r.exit_code != 0 and why in r.output and "Traceback" not in r.output, r.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]          # no local `s3:` folder


def test_schema_output_needs_overwrite_and_never_writes_through_a_link(tmp_path):
    """`schema -o` once opened the file with open(..., "w"): an existing file was replaced and a
    link's target written."""
    out, target = tmp_path / "peft-ray-job.schema.json", tmp_path / "precious.txt"
    out.write_text("mine")
    r = CliRunner().invoke(main, ["schema", "-o", str(out)])
    assert r.exit_code == 2 and "already exists; pass --overwrite" in r.output and out.read_text() == "mine"
    out.unlink()
    target.write_text("keep")
    out.symlink_to(target)
    r = CliRunner().invoke(main, ["schema", "-o", str(out)])
    assert r.exit_code == 2 and "already exists" in r.output and target.read_text() == "keep"
    r = CliRunner().invoke(main, ["schema", "-o", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert target.read_text() == "keep" and not out.is_symlink() and '"$schema"' in out.read_text()
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    r = CliRunner().invoke(main, ["schema", "-o", str(tmp_path / "dangling.json")])
    assert r.exit_code == 2 and not (tmp_path / "nowhere.json").exists()
    r = CliRunner().invoke(main, ["schema", "-o", "s3://bucket/schema.json"])
    assert r.exit_code == 2 and "is a URI" in r.output
