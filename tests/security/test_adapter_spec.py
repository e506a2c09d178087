"""A shared adapter is data: its recorded job never turns on remote code, pickle or a download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import CheckpointError, SpecError
from peft_ray.inference import check_adapter
from peft_ray.security import Trust
from peft_ray.spec import load_spec, validate_spec
from peft_ray.train.local import run_local
from tests.conftest import job_dict
from tests.security._evil import evil_model


@pytest.fixture(scope="module")
def adapter(tiny_bert, tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_local(validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                     train={"max_steps": 1, "eval_every": 1})))
    return out / "adapter"


def _tamper(adapter: Path, root: Path, **model) -> Path:
    copy = root / "shared-adapter"
    shutil.copytree(adapter, copy)
    extra = json.loads((copy / "peft_ray.json").read_text())
    extra["spec"]["model"].update(model)
    (copy / "peft_ray.json").write_text(json.dumps(extra))
    return copy


@pytest.mark.parametrize("command", ["predict", "eval", "export"])
def test_recorded_trust_remote_code_is_refused_without_the_flag(adapter, tiny_bert, tmp_path, command):
    marker = tmp_path / "pwned"
    evil = _tamper(adapter, tmp_path, name_or_path=str(evil_model(tiny_bert, tmp_path, marker)),
                   trust_remote_code=True)
    args = {"predict": ["predict", str(evil), "--input", "x.parquet", "--output", str(tmp_path / "p.jsonl")],
            "eval": ["eval", str(evil), "--data", "x.parquet"],
            "export": ["export", str(evil), str(tmp_path / "merged"), "--merge"]}[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "model.trust_remote_code: true" in result.output and "--trust-remote-code" in result.output
    assert not marker.exists()


def test_recorded_allow_pickle_is_refused_without_the_flag(adapter, tmp_path):
    with pytest.raises(CheckpointError, match="model.allow_pickle: true.*--allow-pickle"):
        check_adapter(_tamper(adapter, tmp_path, allow_pickle=True))


def test_the_flag_turns_it_on(adapter, tmp_path):
    loaded = check_adapter(_tamper(adapter, tmp_path, trust_remote_code=True), Trust(remote_code=True))
    assert loaded.spec.model.trust_remote_code


def test_recorded_hub_id_is_never_downloaded(adapter, tmp_path):
    shared = _tamper(adapter, tmp_path, name_or_path="someone/not-cached-model-xyz")
    extra = json.loads((shared / "peft_ray.json").read_text())
    extra.pop("base_model_path", None)        # as on another machine: no local base folder recorded
    (shared / "peft_ray.json").write_text(json.dumps(extra))
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache.*never downloads"):
        check_adapter(shared)


def _job_file(tmp_path, tiny_bert, tiny_data, model) -> Path:
    job = tmp_path / "shared-job.yaml"
    spec = job_dict(tiny_bert, tiny_data, tmp_path / "out")
    spec["model"].update(model)
    job.write_text(yaml.safe_dump(spec))
    return job


@pytest.mark.parametrize("command", ["validate", "train", "tune", "zero-shot", "config"])
def test_a_job_file_never_turns_on_remote_code(tiny_bert, tiny_data, tmp_path, command):
    """Job files are shared like adapters: `trust_remote_code: true` in one is refused before the
    model folder is read (its code would run in `validate` already)."""
    marker = tmp_path / "pwned"
    job = _job_file(tmp_path, tiny_bert, tiny_data, {"name_or_path": str(evil_model(tiny_bert, tmp_path, marker)),
                                                    "trust_remote_code": True})
    result = CliRunner().invoke(main, [command, str(job), "--local"] if command == "train" else [command, str(job)])
    assert result.exit_code != 0
    assert "model.trust_remote_code: true" in result.output and "model.trust_remote_code=true" in result.output
    assert not marker.exists()


def test_the_command_line_turns_it_on_for_a_job(tiny_bert, tiny_data, tmp_path):
    marker = tmp_path / "pwned"
    job = _job_file(tmp_path, tiny_bert, tiny_data, {"name_or_path": str(evil_model(tiny_bert, tmp_path, marker)),
                                                    "trust_remote_code": True})
    assert load_spec(job, ["model.trust_remote_code=true"]).model.trust_remote_code
    assert load_spec(job, ["model={name_or_path: " + str(tiny_bert) + ", trust_remote_code: true}"])
    with pytest.raises(SpecError, match="model.allow_pickle: true.*model.allow_pickle=true"):
        load_spec(_job_file(tmp_path, tiny_bert, tiny_data, {"allow_pickle": True}))
    assert load_spec(job, ["model.trust_remote_code=true", "model.allow_pickle=yes"]).model.allow_pickle


def test_a_search_cannot_turn_on_remote_code(tiny_bert, tiny_data, tmp_path):
    from peft_ray.tune.space import SearchSpace, check_keys

    spec = job_dict(tiny_bert, tiny_data, tmp_path / "out",
                    tune={"space": {"model.trust_remote_code": {"choice": [True, False]}}})
    with pytest.raises(SpecError, match="tune.space.model.trust_remote_code: cannot be searched"):
        check_keys(SearchSpace.from_spec(validate_spec(spec)))


def test_allow_pickle_on_the_command_line_allows_a_pickle_only_copy_of_the_base(adapter, tiny_bert, tmp_path):
    """A colleague's copy of the base holds only pytorch_model.bin: --allow-pickle did nothing unless the
    recorded job had allowed pickle itself, and the refusal named an option eval and predict lack (a
    review finding). The flag, the user's own, allows it; the recorded job alone still never does."""
    import torch
    from transformers import AutoModel

    base = tmp_path / "pickled-base"
    shutil.copytree(tiny_bert, base)
    torch.save(AutoModel.from_pretrained(tiny_bert).state_dict(), base / "pytorch_model.bin")
    for f in base.glob("*.safetensors"):
        f.unlink()
    assert not list(base.glob("*.safetensors")) and (base / "pytorch_model.bin").is_file()
    shared = _tamper(adapter, tmp_path, name_or_path=str(base))
    extra = json.loads((shared / "peft_ray.json").read_text())
    extra["base_model_path"] = str(base)
    (shared / "peft_ray.json").write_text(json.dumps(extra))
    with pytest.raises(CheckpointError, match=r"holds only pickle weights .* --allow-pickle \(eval, predict, export\)"):
        check_adapter(shared)
    assert check_adapter(shared, Trust(pickle=True)).spec.model.allow_pickle
    r = CliRunner().invoke(main, ["export", str(shared), str(tmp_path / "exported"), "--allow-pickle"])
    assert r.exit_code == 0, r.output


def test_a_colleague_points_the_adapter_at_their_own_copy_of_the_base(adapter, tiny_bert, tiny_data, tmp_path):
    """The recorded base was a folder on another machine: eval, predict and export had no way to name
    this machine's copy, and the error did not say how (a review finding). --base-model does."""
    shared = _tamper(adapter, tmp_path, name_or_path="/home/alice/models/tiny-bert")
    extra = json.loads((shared / "peft_ray.json").read_text())
    extra["base_model_path"] = "/home/alice/models/tiny-bert"
    (shared / "peft_ray.json").write_text(json.dumps(extra))
    with pytest.raises(CheckpointError, match="/home/alice/models/tiny-bert.*pass --base-model PATH"):
        check_adapter(shared)
    assert check_adapter(shared, Trust(base_model=str(tiny_bert))).spec.model.name_or_path == str(tiny_bert)
    with pytest.raises(CheckpointError, match="--base-model 'someone/not-cached-xyz' is neither a folder"):
        check_adapter(shared, Trust(base_model="someone/not-cached-xyz"))
    r = CliRunner().invoke(main, ["eval", str(shared), "--data", str(tiny_data / "validation.parquet"), "--local"])
    assert r.exit_code == 2 and "pass --base-model PATH" in r.output, r.output     # eval says so too
    r = CliRunner().invoke(main, ["predict", str(shared), "--input", str(tiny_data / "validation.parquet"),
                                  "--output", str(tmp_path / "p.jsonl"), "--local", "--base-model", str(tiny_bert)])
    assert r.exit_code == 0 and "wrote 70 rows" in r.output, r.output


def _retensor(adapter: Path, root: Path, name: str, change) -> Path:
    from safetensors.torch import load_file, save_file

    copy = root / name
    shutil.copytree(adapter, copy)
    state = load_file(str(copy / "adapter_model.safetensors"))
    save_file({k: change(v) for k, v in state.items()}, str(copy / "adapter_model.safetensors"))
    return copy


@pytest.mark.parametrize("name, change, expected", [
    ("nan", lambda t: t * float("nan"), "non-finite value(s) (NaN or inf)"),
    ("int", lambda t: t.long(), "holds int64 values, not floating point"),
    ("complex", lambda t: t.to(torch.complex64), "holds complex64 values, not floating point"),
])
def test_an_adapter_of_non_finite_or_non_float_tensors_is_refused_by_name(adapter, tiny_data, tmp_path, name,
                                                                         change, expected):
    """A NaN adapter scored as a coin flip without a word, and a complex one was cast silently (a review
    finding); eval names the file, the tensor and what is wrong with it."""
    bad = _retensor(adapter, tmp_path, name, change)
    r = CliRunner().invoke(main, ["eval", str(bad), "--data", str(tiny_data / "validation.parquet"), "--local"])
    assert r.exit_code == 2 and "adapter_model.safetensors: '" in r.output and expected in r.output, r.output


@pytest.mark.parametrize("value, expected", [
    (5, "base_model_path is a JSON int, not a path"),
    ("x" * 300, "base_model_path is longer than a filesystem allows"),
])
def test_a_malformed_recorded_base_path_names_the_adapters_file(adapter, tiny_bert, tmp_path, value, expected):
    shared = _tamper(adapter, tmp_path)
    extra = json.loads((shared / "peft_ray.json").read_text())
    extra["base_model_path"] = value
    (shared / "peft_ray.json").write_text(json.dumps(extra))
    with pytest.raises(CheckpointError, match=f"peft_ray.json: {expected}"):
        check_adapter(shared)
    assert check_adapter(shared, Trust(base_model=str(tiny_bert))).spec.model.name_or_path == str(tiny_bert)


def test_base_model_on_the_command_line_is_named_as_the_users_own(adapter, tiny_data, tmp_path):
    data = str(tiny_data / "validation.parquet")
    for value, expected in (("", "is empty"), ("x" * 300, "longer than a filesystem allows"),
                            (str(tmp_path / "nope"), "error: --base-model: ")):
        r = CliRunner().invoke(main, ["eval", str(adapter), "--data", data, "--local", "--base-model", value])
        assert r.exit_code == 2 and expected in r.output and "peft_ray.json" not in r.output, (value, r.output)
