"""A resume review: a continuation uses what it records (train.max_grad_norm), a damaged newest
checkpoint is said before an older one is used, a --local save killed mid-write leaves nothing
behind for good, and another method is refused naming the field."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from peft_ray.errors import CheckpointError
from peft_ray.train.local import run_local
from peft_ray.train.report import LocalReporter
from tests.train.test_resume_review_s30 import STEP2, _spec


def _adapter(out):
    return load_file(str(out / "checkpoints/checkpoint_00000004/adapter/adapter_model.safetensors"))


@pytest.fixture(scope="module")
def two_steps(tiny_bert, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("s32") / "run"
    run_local(_spec(tiny_bert, tiny_data, out, checkpoint_every=2))
    return out


def _copy(run, tmp_path, name):
    out = tmp_path / name
    shutil.copytree(run, out)
    (out / "job.yaml").write_text((out / "job.yaml").read_text().replace(str(run), str(out)))
    return out


def test_a_resume_clips_at_its_own_max_grad_norm(two_steps, tiny_bert, tiny_data, tmp_path):
    """DeepSpeed's optimizer restored the saved clip_grad: the new value was recorded, the old used."""
    same, tight = _copy(two_steps, tmp_path, "same"), _copy(two_steps, tmp_path, "tight")
    run_local(_spec(tiny_bert, tiny_data, same, max_steps=4, eval_every=4), resume=True)
    run_local(_spec(tiny_bert, tiny_data, tight, max_steps=4, eval_every=4, max_grad_norm=1e-6), resume=True)
    a, b = _adapter(same), _adapter(tight)
    assert any(not (a[k] == b[k]).all() for k in a)


def test_a_newest_checkpoint_with_an_unreadable_state_is_said(two_steps, tiny_bert, tiny_data, tmp_path, capsys):
    out = _copy(two_steps, tmp_path, "run")
    shutil.copytree(out / STEP2, out / "checkpoints/checkpoint_00000001")   # an older good one
    (out / STEP2 / "trainer_state.json").write_text("{")
    run_local(_spec(tiny_bert, tiny_data, out, max_steps=3, eval_every=3), resume=True)
    said = capsys.readouterr().out
    assert f"warning: skipping checkpoint {out / STEP2}: trainer_state.json is corrupt" in said
    assert "resumed from" in said and "checkpoint_00000001" in said
    # epochs counted from 1 and micro-batches done (a review: "epoch 1, micro-batch 93" read as halfway)
    assert re.search(r"checkpoint_00000001 after step 2 \((\d+ micro-batches into epoch [1-9]|\d+ epochs? done)\)", said)


def test_a_local_save_killed_mid_write_is_swept_by_the_next(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    root = tmp_path / "checkpoints"
    left = root / f".staging-{int(dead.stdout)}-abc"
    (left / "ds").mkdir(parents=True)
    live = root / f".staging-{os.getpid()}-xyz"
    live.mkdir()
    reporter = LocalReporter(str(tmp_path), keep=2, resume_from=None)
    with reporter.staging_dir() as tmp:
        assert os.path.basename(tmp).startswith(f".staging-{os.getpid()}-")
    assert not left.exists() and live.exists()


def test_another_method_is_refused_naming_the_field(two_steps, tiny_bert, tiny_data, tmp_path):
    from peft_ray.spec import validate_spec
    from tests.conftest import job_dict

    out = _copy(two_steps, tmp_path, "run")
    job = job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1}, train={"max_steps": 4, "eval_every": 2})
    job["method"] = {"name": "lora"}
    with pytest.raises(CheckpointError, match=r"differs from the run in output.dir '.*': method.name is lora here "
                                              r"but the run used prompt_tuning\. Its checkpoints"):
        run_local(validate_spec(job), resume=True)
    renamed = validate_spec({**job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                        train={"max_steps": 3, "eval_every": 3}), "name": "renamed"})
    run_local(renamed, resume=True)      # `name` may change


def test_a_moved_data_root_resumes_and_other_data_under_the_same_names_is_refused(two_steps, tiny_bert, tiny_data,
                                                                                tmp_path):
    """data.root may change (the same files elsewhere); other files under the same names took the
    checkpoint's data position into another data set without a word."""
    import json

    from peft_ray.data import builtin
    from tests.conftest import write_rows

    out = _copy(two_steps, tmp_path, "run")
    assert set(json.loads((out / "data_files.json").read_text())) == {"data.train", "data.validation"}
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    write_rows(other / "train.parquet", builtin.make_rows(256, seed=9))
    recorded = (out / "job.yaml").read_text()
    with pytest.raises(CheckpointError, match=r"--resume: data.train: .*other/train.parquet \(.* bytes\) is not the "
                                              r"file the run read as .*train.parquet"):
        run_local(_spec(tiny_bert, other, out, max_steps=3, eval_every=3), resume=True)
    assert (out / "job.yaml").read_text() == recorded
    moved = tmp_path / "moved"
    shutil.copytree(tiny_data, moved)
    run_local(_spec(tiny_bert, moved, out, max_steps=3, eval_every=3), resume=True)


def test_a_damaged_checkpoint_under_ray_names_is_said_too(two_steps, tmp_path):
    """A diff review: Ray names checkpoints by time, so the first fix (a step from the folder's name)
    left a damaged newest Ray checkpoint passed over without a word."""
    from peft_ray.train.checkpoint import latest_good_checkpoint

    root = tmp_path / "ray" / "run-1"
    good, damaged = root / "checkpoint_2026-12-07_04-47-15.117294", root / "checkpoint_2026-12-07_04-47-16.411949"
    shutil.copytree(two_steps / STEP2, good)
    shutil.copytree(two_steps / STEP2, damaged)
    (damaged / "trainer_state.json").write_text("{")
    warned = []
    assert latest_good_checkpoint(tmp_path / "ray", warn=warned.append) == good
    assert len(warned) == 1 and f"skipping checkpoint {damaged}: trainer_state.json is corrupt" in warned[0]


def test_a_fraction_that_was_never_read_may_be_dropped_on_resume():
    """A diff review: a run of before whose job set both data.validation and a fraction (never read
    beside a file) could neither keep it (now refused) nor drop it (a changed field)."""
    from peft_ray.train.resume import changed_fields

    run = {"data": {"validation": "v.parquet", "validation_fraction": 0.1}}
    assert changed_fields(run, {"data": {"validation": "v.parquet", "validation_fraction": 0.0}}) == {}
    assert changed_fields({"data": {"validation": None, "validation_fraction": 0.1}},
                          {"data": {"validation": None, "validation_fraction": 0.2}}) != {}
