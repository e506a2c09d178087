"""--resume of a checkpoint that was tampered with, or written by another job, ends in one clear
refusal before training (never a traceback after it), and a refused resume leaves the run's
job.yaml as it was. A non-finite loss is the job's own error, said in one line."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from peft_ray.errors import CheckpointError, JobError
from peft_ray.spec import validate_spec
from peft_ray.storage import Location
from peft_ray.train.checkpoint import load_checkpoint
from peft_ray.train.checkpoint_check import parse_state
from peft_ray.train.local import run_local
from tests.conftest import job_dict

STEP2 = "checkpoints/checkpoint_00000002"


def _spec(tiny_bert, tiny_data, out, **train):
    return validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                  train={"max_steps": 2, "eval_every": 2, **train}))


@pytest.fixture(scope="module")
def two_steps(tiny_bert, tiny_data, tmp_path_factory) -> Path:
    """A finished 2-step --local run with one checkpoint (step 2), trained once for the module."""
    out = tmp_path_factory.mktemp("s30") / "run"
    run_local(_spec(tiny_bert, tiny_data, out))
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    """The run in a folder of its own, job.yaml saying so (output.dir is compared on --resume)."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "job.yaml").write_text((out / "job.yaml").read_text().replace(str(run), str(out)))
    return out


def _rehash(ck: Path) -> None:
    """Re-hash rank 0's manifest, as someone editing a checkpoint by hand would."""
    manifest = json.loads((ck / "MANIFEST.rank0.json").read_text())
    (ck / "MANIFEST.rank0.json").write_text(json.dumps(
        {rel: hashlib.sha256((ck / rel).read_bytes()).hexdigest() for rel in manifest}))


def _edit_state(ck: Path, **fields) -> None:
    state = json.loads((ck / "trainer_state.json").read_text())
    (ck / "trainer_state.json").write_text(json.dumps({**state, **fields}))
    _rehash(ck)


GOOD = {"global_step": 2, "epoch": 0, "micro_in_epoch": 2, "samples": 16.0, "last_loss": 0.69, "loss_sum": 1.4,
        "best_score": 0.5, "best_step": 2, "history": [{"accuracy": 0.5, "loss": float("nan"), "step": 2}]}


@pytest.mark.parametrize("field, value, said", [
    ("best_score", "high", "best_score is 'high', not a number"),
    ("loss_sum", "a", "loss_sum is 'a', not a finite number"),
    ("micro_in_epoch", 10 ** 20, "micro_in_epoch is 100000000000000000000, not an integer from 0"),
    ("best_step", True, "best_step is True, not an integer"),
    ("samples", -1, "samples is -1, not a finite non-negative number"),
    ("train_seconds", float("inf"), "train_seconds is inf, not a finite"),
    ("last_loss", float("inf"), "last_loss is inf, not a finite number"),
    ("best_score", float("nan"), "best_score is nan, not a number"),
    ("history", [{"accuracy": "0.9"}], "history[0].accuracy is '0.9', not a number"),
    ("history", [3], "history[0] is 3, not an object"),
])
def test_every_trainer_state_field_is_type_checked(field, value, said):
    assert parse_state(GOOD).best_score == 0.5
    with pytest.raises(ValueError, match=said.replace("[", r"\[").replace("]", r"\]")):
        parse_state({**GOOD, field: value})


def test_the_documented_empty_values_pass():
    state = parse_state({**GOOD, "last_loss": float("nan"), "best_score": None, "history": []})
    assert math.isnan(state.last_loss) and state.best_score is None


def test_a_tampered_trainer_state_is_skipped_before_training(two_steps, tiny_bert, tiny_data, tmp_path, capsys):
    """best_score "high" passed the check and crashed the resume after a step and an evaluation
    (TypeError in best.update_best); the checkpoint is now skipped, said, like any corrupt one."""
    out = _copy(two_steps, tmp_path)
    _edit_state(out / STEP2, best_score="high")
    recorded = (out / "job.yaml").read_text()
    with pytest.raises(CheckpointError, match="no usable checkpoint under"):
        run_local(_spec(tiny_bert, tiny_data, out, max_steps=3, eval_every=1), resume=True)
    assert "trainer_state.json is corrupt (best_score is 'high', not a number" in capsys.readouterr().out
    assert (out / "job.yaml").read_text() == recorded


def test_a_checkpoint_of_two_workers_resumed_with_one_local_rank_names_the_worker_count(two_steps, tiny_bert,
                                                                                        tiny_data, tmp_path,
                                                                                        monkeypatch):
    """--local runs scaling.local_ranks ranks (train/local_ranks.py): with the cores for them it can
    resume a 2-worker checkpoint; with fewer cores than the checkpoint's ranks only Ray can."""
    out = _copy(two_steps, tmp_path)
    (out / STEP2 / "MANIFEST.rank1.json").write_text("{}")
    _edit_state(out / STEP2, world_size=2)
    monkeypatch.setattr("peft_ray.train.local_ranks.cores", lambda: 2)
    with pytest.raises(CheckpointError, match=r"written by 2 worker\(s\) and this run has 1 \(ZeRO shards are per "
                                              r"rank\); resume it with scaling.local_ranks=2"):
        run_local(_spec(tiny_bert, tiny_data, out, max_steps=3), resume=True)
    monkeypatch.setattr("peft_ray.train.local_ranks.cores", lambda: 1)
    with pytest.raises(CheckpointError, match=r"resume it without --local \(through Ray; this machine has 1 core\(s\) "
                                              r"for --local's ranks\) with scaling.num_workers=2"):
        run_local(_spec(tiny_bert, tiny_data, out, max_steps=3), resume=True)


def test_a_worker_meeting_another_worker_count_raises_a_job_error(tmp_path):
    """The workers' own check (a restarted group, a checkpoint the driver did not see) is a JobError too."""
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 2, "world_size": 2}))
    with pytest.raises(CheckpointError, match=r"written by 2 workers and this run has 1; resume with "
                                              r"scaling.num_workers=2"):
        load_checkpoint(None, tmp_path)


def test_a_checkpoint_whose_tensors_do_not_fit_names_the_parameter_and_keeps_job_yaml(two_steps, tiny_bert,
                                                                                      tiny_data, tmp_path):
    """A prompt of 2 tokens where the job has 4 (the manifest re-hashed) ended in torch's raw
    RuntimeError; and the refused resume had rewritten job.yaml (max_steps: 3 over a 2-step run)."""
    import torch

    out = _copy(two_steps, tmp_path)
    states = out / STEP2 / "ds" / "state" / "mp_rank_00_model_states.pt"
    saved = torch.load(states, weights_only=False)
    key = next(k for k in saved["module"] if "prompt" in k)
    saved["module"][key] = saved["module"][key][:2].clone()
    torch.save(saved, states)
    _rehash(out / STEP2)
    recorded = (out / "job.yaml").read_text()
    with pytest.raises(CheckpointError, match=rf"checkpoint .*checkpoint_00000002 does not fit this job's model: "
                                              rf"size mismatch for {key}: .*--overwrite or another output.dir"):
        run_local(_spec(tiny_bert, tiny_data, out, max_steps=3), resume=True)
    assert (out / "job.yaml").read_text() == recorded


def test_a_checkpoint_of_another_job_is_refused_from_its_record_before_loading(two_steps, tiny_bert, tiny_data,
                                                                               tmp_path, monkeypatch):
    out = _copy(two_steps, tmp_path)
    record = out / STEP2 / "adapter" / "peft_ray.json"
    meta = json.loads(record.read_text())
    meta["spec"]["method"]["num_virtual_tokens"] = 8
    record.write_text(json.dumps(meta))
    _rehash(out / STEP2)
    monkeypatch.setattr("peft_ray.train.local.run_in_process", lambda *a, **k: pytest.fail("the model was built"))
    with pytest.raises(CheckpointError, match=r"method.num_virtual_tokens is 4 here but that job used 8; .*"
                                              r"Resume it with the job that wrote it"):
        run_local(_spec(tiny_bert, tiny_data, out, max_steps=3), resume=True)


def test_a_failed_resume_puts_job_yaml_back_unless_it_saved_a_checkpoint(tmp_path):
    """Both layouts (Ray's ray/<run>/checkpoint_*, --local's checkpoints/checkpoint_*)."""
    from peft_ray.train.run_dir import record_kept_unless_saved

    out = Location.at(str(tmp_path))
    (tmp_path / "ray" / "a" / "checkpoint_1").mkdir(parents=True)
    (tmp_path / "ray" / "a" / "checkpoint_1" / "trainer_state.json").write_text("{}")
    (tmp_path / "job.yaml").write_text("train: {max_steps: 2}\n")
    with pytest.raises(CheckpointError), record_kept_unless_saved(out, resume=True):
        (tmp_path / "job.yaml").write_text("train: {max_steps: 3}\n")
        raise CheckpointError("refused by the workers")
    assert (tmp_path / "job.yaml").read_text() == "train: {max_steps: 2}\n"
    with pytest.raises(KeyboardInterrupt), record_kept_unless_saved(out, resume=True):
        (tmp_path / "job.yaml").write_text("train: {max_steps: 3}\n")
        (tmp_path / "ray" / "b" / "checkpoint_2").mkdir(parents=True)
        (tmp_path / "ray" / "b" / "checkpoint_2" / "trainer_state.json").write_text("{}")
        raise KeyboardInterrupt       # after this job's own checkpoint: the record is this job's
    assert (tmp_path / "job.yaml").read_text() == "train: {max_steps: 3}\n"


def test_a_nonfinite_loss_is_a_job_error_that_names_the_starting_adapter(two_steps, tiny_bert, tiny_data,
                                                                         tmp_path, monkeypatch):
    from peft_ray.train.recipe import NonFiniteLoss

    monkeypatch.setenv("PEFT_RAY_NAN_AT_STEP", "1")
    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "run", scaling={"num_workers": 1},
                                  method={"init_from": str(two_steps / "adapter")},
                                  train={"max_steps": 2, "eval_every": 2}))
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at step 1 .*method.init_from '.*adapter' \(it may hold "
                                            r"non-finite values\), or set train.nan_policy: skip") as e:
        run_local(spec)
    assert isinstance(e.value, JobError) and not e.value.retryable


def test_a_nonfinite_loss_stops_a_ray_run_without_restarts():
    pytest.importorskip("ray")
    from peft_ray.train.job_error_stop import first_job_error
    from peft_ray.train.recipe import NonFiniteLoss

    error = NonFiniteLoss("loss is nan at step 3")
    assert first_job_error({1: RuntimeError("other"), 0: error}) is error
