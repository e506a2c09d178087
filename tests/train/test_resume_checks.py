"""--resume continues the run it finds: a changed job is refused before anything is written, a run
trained the other way (--local or Ray) is named, and a finished run is left as it is."""

from __future__ import annotations

import pytest

from peft_ray.errors import CheckpointError
from peft_ray.spec import validate_spec
from peft_ray.train.local import run_local
from peft_ray.train.resume import changed_fields, check_same_run
from tests.conftest import job_dict


def _spec(tiny_bert, tiny_data, out, **sections):
    sections.setdefault("scaling", {"num_workers": 1})
    return validate_spec(job_dict(tiny_bert, tiny_data, out, **sections))


def test_fields_that_define_the_run_must_stay_and_run_length_may_change():
    run = {"name": "a", "method": {"name": "lora", "r": 8}, "train": {"batch_size": 32, "seed": 0, "max_steps": 3,
           "eval_every": 10, "lr": 1e-3}, "data": {"root": "/d", "train": "t.csv"}, "output": {"dir": "/o"}}
    same = {**run, "train": {**run["train"], "max_steps": 9, "eval_every": 2}, "data": {"root": "/e", "train": "t.csv"},
            "output": {"dir": "/p"}}
    assert changed_fields(run, same) == {}
    other = {**run, "method": {"name": "lora", "r": 16}, "train": {**run["train"], "seed": 4, "lr": 1e-4}}
    assert changed_fields(run, other) == {"method.r": (8, 16), "train.lr": (1e-3, 1e-4), "train.seed": (0, 4)}
    # the same model folder found elsewhere (another working dir, `submit --resume`), not another model
    moved = {"model": {"name_or_path": "/tmp/ray/session_2/pkg/models/tiny"}}
    assert changed_fields({"model": {"name_or_path": "/tmp/ray/session_1/pkg/models/tiny"}}, moved) == {}
    assert changed_fields({"model": {"name_or_path": "/models/small"}}, moved) != {}


def test_a_changed_data_root_is_named_with_the_files_it_moved():
    """`data.root` may change (the same files elsewhere), but a root that reads other files is refused
    through data.train, whose relative name alone hid which folder the run had read."""
    run = {"data": {"root": "builtin:sentiment", "train": "train.parquet"}}
    now = {"data": {"root": "/d/sst2", "train": "train.parquet"}}
    with pytest.raises(CheckpointError) as e:
        check_same_run(run, now, "/o")
    assert "data.train is /d/sst2/train.parquet here but the run used train.parquet" in str(e.value)
    assert "under data.root builtin:sentiment, this job under /d/sst2" in str(e.value)


def test_a_changed_job_is_refused_and_its_record_kept(tiny_bert, tiny_data, tmp_path):
    out = tmp_path / "run"
    run_local(_spec(tiny_bert, tiny_data, out, train={"max_steps": 2, "eval_every": 2}))
    recorded = (out / "job.yaml").read_text()
    changed = _spec(tiny_bert, tiny_data, out, train={"max_steps": 4, "eval_every": 2, "batch_size": 4, "seed": 3})
    with pytest.raises(CheckpointError, match=r"train.batch_size is 4 here but the run used .*train.seed is 3"):
        run_local(changed, resume=True)
    assert (out / "job.yaml").read_text() == recorded


def test_a_finished_run_is_left_as_it_is(tiny_bert, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    spec = _spec(tiny_bert, tiny_data, out, train={"max_steps": 2, "eval_every": 2})
    first = run_local(spec)
    before = {f: (out / f).read_text() for f in ("metrics.json", "job.yaml")}
    shorter = _spec(tiny_bert, tiny_data, out, train={"max_steps": 1, "eval_every": 1})
    again = run_local(shorter, resume=True)
    assert "already reached step 2 of 1: nothing left to train" in capsys.readouterr().out
    assert again == first and {f: (out / f).read_text() for f in before} == before   # its record too


def test_a_run_stopped_before_writing_its_outputs_gets_them_from_its_last_checkpoint(tiny_bert, tiny_data,
                                                                                      tmp_path, capsys):
    """A Ctrl-C or kill between the last checkpoint and metrics.json (the final save) left a finished
    run that --resume refused; its last checkpoint's report now gives the outputs."""
    import json
    import shutil

    out = tmp_path / "run"
    spec = _spec(tiny_bert, tiny_data, out, train={"max_steps": 3, "eval_every": 1})
    first = run_local(spec)
    adapters = {n: (out / n / "adapter_model.safetensors").read_bytes() for n in ("adapter", "adapter_last")}
    for name in ("adapter", "adapter_last"):
        shutil.rmtree(out / name)
    (out / "metrics.json").unlink()
    again = run_local(spec, resume=True)
    assert "stopped before writing its outputs; writing adapter/ and metrics.json from its last checkpoint" in \
        capsys.readouterr().out
    assert {n: (out / n / "adapter_model.safetensors").read_bytes() for n in adapters} == adapters
    timing = ("wall_seconds", "time_phases", "save_seconds")    # this process's, not the run's: left out
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in first.items() if k not in timing}
    assert json.loads((out / "metrics.json").read_text()) == again and "wall_seconds" not in again


def test_an_early_stopped_run_is_finished(tiny_bert, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    train = {"max_steps": 40, "eval_every": 1, "early_stopping_patience": 1, "lr": 1e-9}   # hardly a better eval
    first = run_local(_spec(tiny_bert, tiny_data, out, train=train))
    assert first["step"] < 40
    again = run_local(_spec(tiny_bert, tiny_data, out, train=train), resume=True)
    assert "stopped early at step" in capsys.readouterr().out and again == first


def test_paths_and_an_unread_verbalizer_are_no_change():
    run = {"data": {"root": "/d", "train": "t.parquet"}, "template": {"verbalizer": {"a": ["x"]}}}
    same = {"data": {"root": "/d", "train": "/d/t.parquet"}, "template": {"verbalizer": None}}
    assert changed_fields(run, same, ignore=("template.verbalizer",)) == {}
    assert set(changed_fields(run, same)) == {"template.verbalizer.a"}


def test_the_verbalizer_is_unread_exactly_where_a_new_head_scores(tiny_bert, tiny_data, tmp_path):
    """A maintainer-review finding: nothing covered which jobs may resume with another verbalizer.
    On an encoder, `task.head: auto` trains a classifier head (the verbalizer is unread), while
    `task.head: verbalizer` scores label words through the MLM head (it is read)."""
    from peft_ray.train.resume import unread_fields

    head = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "a"))
    words = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "b",
                                   task={"type": "classification", "labels": ["negative", "positive"],
                                         "head": "verbalizer"}))
    assert unread_fields(head) == ("template.verbalizer",)
    assert unread_fields(words) == ()


def test_a_local_run_resumed_through_ray_is_named(tiny_bert, tiny_data, tmp_path):
    from peft_ray.train.run_dir import check_can_start

    out = tmp_path / "run"
    spec = _spec(tiny_bert, tiny_data, out, train={"max_steps": 2, "eval_every": 2})
    run_local(spec)
    with pytest.raises(CheckpointError, match="was trained with --local: its checkpoints are under"):
        check_can_start(spec, resume=True, overwrite=False, local=False)


@pytest.mark.parametrize("local", [True, False])
def test_resume_of_a_folder_without_a_run_says_so_and_makes_nothing(tiny_bert, tiny_data, tmp_path, local):
    """A review finding: --resume on a new folder made it and a train.log, then said "no usable
    checkpoint ...; pass --overwrite instead", where a plain start is the answer."""
    from click.testing import CliRunner
    import yaml

    from peft_ray.cli import main

    out = tmp_path / "never"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1})))
    r = CliRunner().invoke(main, ["train", str(job), "--resume", *(["--local"] if local else [])])
    assert r.exit_code == 2 and "holds no run to continue" in r.output and "without --resume" in r.output, r.output
    assert not out.exists()
