"""tune --resume reads search.json as data: a saved trial only picks among the job's own candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import CheckpointError, SpecError
from peft_ray.spec import load_spec
from peft_ray.tune import space as S
from peft_ray.tune.folder import prepared_dir
from peft_ray.tune.runner import plan_search
from peft_ray.tune.state import read_state
from tests.conftest import job_dict
from tests.security._evil import evil_model

SPACE = {"train.lr": {"choice": [0.01, 0.02]}, "train.warmup_ratio": {"uniform": [0.0, 0.2]},
         "method.num_virtual_tokens": {"uniform": [2, 6]}}


@pytest.fixture
def search(tiny_bert, tiny_data, tmp_path):
    """(job file, output.dir) of a search started as `tune` starts one, interrupted before Ray ran."""
    out = tmp_path / "search"
    job = tmp_path / "search.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                           tune={"space": SPACE, "search": "random", "num_samples": 2,
                                                 "scheduler": {"name": "fifo"}})))
    spec = load_spec(job)
    with prepared_dir(spec, resume=False, overwrite=False):
        plan_search(spec, S.SearchSpace.from_spec(spec), out, resume=False)
    (out / "tune").mkdir()
    return job, out


def _tamper(out: Path, **trial) -> None:
    state = json.loads((out / "search.json").read_text())
    state["trials"][0] = trial
    (out / "search.json").write_text(json.dumps(state))


def test_resume_refuses_a_planted_trial_before_ray_starts(search, tiny_bert, tmp_path, monkeypatch):
    """The reviewer's attack: trials[0] turns on trust_remote_code for a model folder with an auto_map."""
    from peft_ray.train import ray_start

    job, out = search
    marker = tmp_path / "pwned"
    _tamper(out, **{"model.trust_remote_code": True, "model.name_or_path": str(evil_model(tiny_bert, tmp_path,
                                                                                            marker))})
    started = []
    monkeypatch.setattr(ray_start, "init_ray", lambda *a, **k: started.append(1) or 1 / 0)
    result = CliRunner().invoke(main, ["tune", str(job), "--resume"])
    assert result.exit_code == 2, result.output
    assert f"{out / 'search.json'}: trials[0]: key 'model.trust_remote_code' is not searched" in result.output
    assert not started and not marker.exists()


@pytest.mark.parametrize("trial, says", [
    ({"template": 0, "verbalizer": 0, "train.lr": 5.0}, "key 'train.lr': 5.0 is not one of"),
    ({"template": 0, "train.warmup_ratio": 0.9}, "key 'train.warmup_ratio': 0.9"),
    ({"template": 0, "method.num_virtual_tokens": 3.5}, "key 'method.num_virtual_tokens': 3.5"),
    ({"template": 0, "method.num_virtual_tokens": True}, "key 'method.num_virtual_tokens': True"),
    ({"template": 7}, "key 'template': 7"),
    ({"template": 0, "verbalizer": -1}, "key 'verbalizer': -1"),
    ({"template": 0, "scaling.address": "evil.example:6379"}, "key 'scaling.address' is not searched"),
    ({"template": 0, "data.root": "/tmp/elsewhere"}, "key 'data.root' is not searched"),
])
def test_values_outside_the_jobs_own_candidates_are_refused(search, trial, says):
    job, out = search
    _tamper(out, **trial)
    space = S.SearchSpace.from_spec(load_spec(job))
    with pytest.raises(CheckpointError, match=r"search\.json: trials\[0\]: ") as e:
        read_state(out / "search.json", space)
    assert says in str(e.value)


@pytest.mark.parametrize("field, value", [("template_ids", [0, 9]), ("template_ids", []),
                                          ("verbalizer_for", {"0": 4}), ("trials", {"0": {}})])
def test_a_malformed_state_is_refused(search, field, value):
    job, out = search
    state = json.loads((out / "search.json").read_text())
    state[field] = value
    (out / "search.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=f"search.json: .*{field}"):
        read_state(out / "search.json", S.SearchSpace.from_spec(load_spec(job)))


def test_the_searchs_own_state_reads_back_as_written(search):
    job, out = search
    saved = json.loads((out / "search.json").read_text())
    state = read_state(out / "search.json", S.SearchSpace.from_spec(load_spec(job)))
    assert state["trials"] == saved["trials"] and len(state["trials"]) == 2
    assert state["template_ids"] == saved["template_ids"]


def test_a_trial_never_trusts_more_than_the_search(search):
    """check_trial_trust holds whatever an assignment holds (the saved trial's keys are checked first)."""
    job, _ = search
    space = S.SearchSpace.from_spec(load_spec(job))
    with pytest.raises(SpecError, match="model.trust_remote_code: true, which only the command line turns on"):
        S.check_trials(space, [{"template": 0, "model.trust_remote_code": True}])
    with pytest.raises(SpecError, match="scaling.address differs from the search's"):
        S.check_trials(space, [{"template": 0, "scaling.address": "evil.example:6379"}])
