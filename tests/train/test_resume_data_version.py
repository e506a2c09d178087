"""A checkpoint records how its run ordered and cut rows (trainer_state.json's data_version), as
its position inside an epoch counts micro-batches of that order. --resume from a checkpoint of an
earlier peft-ray says what its continuation reads otherwise (before training, as a warning: the
adapter and optimizer load as they are), and the continued run's checkpoints record this version."""

from __future__ import annotations

import json

from peft_ray.spec import validate_spec
from peft_ray.train import data_iter
from peft_ray.train.checkpoint_check import DATA_VERSION, TrainerState, parse_state
from peft_ray.train.local import run_local
from peft_ray.train.resume import data_changes
from tests.conftest import job_dict
from tests.train.test_resume_review_s30 import STEP2, _rehash


def _spec(tiny_bert, tiny_data, out, **train):
    return validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                  train={"max_steps": 2, "eval_every": 2, **train}))


def _older(ck, **fields) -> None:
    """The checkpoint as an earlier peft-ray wrote it: no data_version."""
    state = json.loads((ck / "trainer_state.json").read_text())
    state.pop("data_version")
    (ck / "trainer_state.json").write_text(json.dumps({**state, **fields}))
    _rehash(ck)


def test_a_new_state_records_this_version_and_an_unversioned_one_reads_as_zero():
    assert TrainerState().data_version == DATA_VERSION
    assert parse_state({"global_step": 3}).data_version == 0
    assert parse_state({"global_step": 3, "data_version": DATA_VERSION}).data_version == DATA_VERSION


def test_what_an_older_checkpoint_reads_otherwise_is_said_only_where_it_applies(tiny_bert, tiny_data, tmp_path,
                                                                             monkeypatch):
    ck = tmp_path / "ck"
    ck.mkdir()
    spec = _spec(tiny_bert, tiny_data, tmp_path / "run")

    def state(**fields):
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": 3, **fields}))
        return data_changes(str(ck), spec, train_rows=40)

    assert state(data_version=DATA_VERSION, micro_in_epoch=3, truncated=5) == []
    assert state(micro_in_epoch=3) == []               # a shard held in memory keeps its order
    assert state(micro_in_epoch=0, truncated=0) == []
    [cut] = state(truncated=5)
    assert "(5 were cut in the first epoch) may now be cut otherwise" in cut
    monkeypatch.setattr(data_iter, "IN_MEMORY_ROWS", 30)
    [order] = state(micro_in_epoch=3, epoch=1)
    assert "shard of over 30 rows (here 40) is now permuted whole" in order and "rest of epoch 1" in order
    assert state(micro_in_epoch=0) == []                # an epoch boundary: every epoch is permuted afresh
    [newer] = state(data_version=DATA_VERSION + 1)
    assert "written by a newer peft-ray" in newer


def test_a_version_1_checkpoint_inside_an_epoch_with_a_short_last_step_is_told_its_last_window_moved(
        tiny_bert, tiny_data, tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    spec = _spec(tiny_bert, tiny_data, tmp_path / "run")
    step = spec.micro_batch_size * spec.train.grad_accum

    def changes(rows, **fields):
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": 3, "data_version": 1, **fields}))
        return data_changes(str(ck), spec, train_rows=rows)

    assert changes(4 * step, micro_in_epoch=3) == []          # whole steps: nothing was cut
    assert changes(4 * step + 1, micro_in_epoch=0) == []      # at an epoch's start
    [moved] = changes(4 * step + 1, micro_in_epoch=3, epoch=2)
    assert f"short of a whole step (1 of this worker's {4 * step + 1})" in moved and "epoch 2" in moved


def test_resume_from_an_older_checkpoint_warns_and_goes_on_in_this_version(tiny_bert, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    run_local(_spec(tiny_bert, tiny_data, out))
    _older(out / STEP2, truncated=3)
    capsys.readouterr()
    run_local(_spec(tiny_bert, tiny_data, out, max_steps=4, eval_every=2), resume=True)
    said = capsys.readouterr().out
    assert f"--resume from {out / STEP2}, written by an earlier peft-ray" in said
    assert "(3 were cut in the first epoch)" in said and "The run goes on" in said
    step4 = json.loads((out / "checkpoints/checkpoint_00000004/trainer_state.json").read_text())
    assert step4["data_version"] == DATA_VERSION and step4["global_step"] == 4


def test_a_checkpoint_of_this_version_resumes_without_a_word(tiny_bert, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    run_local(_spec(tiny_bert, tiny_data, out))
    capsys.readouterr()
    run_local(_spec(tiny_bert, tiny_data, out, max_steps=4, eval_every=2), resume=True)
    assert "written by an earlier peft-ray" not in capsys.readouterr().out
