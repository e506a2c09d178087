"""`peft-ray config` prints the resolved job with every default; `peft-ray schema` writes a
JSON Schema in which each method's fields hang off `method.name`."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.methods import METHODS
from peft_ray.spec import validate_spec
from peft_ray.spec.schema import DataSpec, TrainSpec
from tests.conftest import job_dict


def _job(tmp_path, tiny_bert, tiny_data, **sections) -> str:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out", **sections)))
    return str(p)


def test_config_prints_every_default_and_the_overrides(tmp_path, tiny_bert, tiny_data):
    r = CliRunner().invoke(main, ["config", _job(tmp_path, tiny_bert, tiny_data), "train.max_steps=7",
                                  "method=lora"])
    assert r.exit_code == 0, r.output
    out = yaml.safe_load(r.stdout)      # the YAML alone (a note may go to stderr: {soft} under lora)
    assert out["train"]["max_steps"] == 7
    assert set(TrainSpec.model_fields) <= set(out["train"]) and set(DataSpec.model_fields) <= set(out["data"])
    assert out["method"]["name"] == "lora" and out["method"]["r"] == 8          # the method's own defaults
    assert "lora_alpha" in out["method"] and "target_modules" in out["method"]
    assert validate_spec(out).method.name == "lora"                               # the output is a job again


def test_config_bad_override_is_a_message(tmp_path, tiny_bert, tiny_data):
    r = CliRunner().invoke(main, ["config", _job(tmp_path, tiny_bert, tiny_data), "train.max_stepz=7"])
    assert r.exit_code == 2 and "train.max_stepz: unknown key" in r.output and "max_steps" in r.output


def test_schema_has_a_method_union_and_checks_job_files(tmp_path, tiny_bert, tiny_data):
    path = tmp_path / "job.schema.json"
    r = CliRunner().invoke(main, ["schema", "-o", str(path)])
    assert r.exit_code == 0, r.output
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    method = schema["properties"]["method"]
    union = next(s for s in method["anyOf"] if "oneOf" in s)
    assert union["discriminator"]["propertyName"] == "name"
    assert set(union["discriminator"]["mapping"]) == set(METHODS.names())
    lora = schema["$defs"]["LoraConfig"]["properties"]
    assert {"r", "lora_alpha", "target_modules"} <= set(lora)
    assert "num_virtual_tokens" in schema["$defs"]["PromptTuningConfig"]["properties"]

    check = jsonschema.Draft202012Validator(schema)
    good = job_dict(tiny_bert, tiny_data, tmp_path / "out", method={"name": "lora", "r": 4})
    good["method"] = {"name": "lora", "r": 4}
    assert not list(check.iter_errors(good))
    for shipped in ("jobs/default.yaml", "jobs/sst2_lora.yaml", "jobs/conll03_ner_prefix.yaml"):
        assert not list(check.iter_errors(yaml.safe_load(open(shipped)))), shipped
    bad = {**good, "method": {"name": "lora", "num_virtual_tokens": 4}}      # a prompt-tuning key on LoRA
    assert list(check.iter_errors(bad))
    assert list(check.iter_errors({**good, "train": {"batch_size": "big"}}))
    assert not list(check.iter_errors({**good, "method": "lora"}))    # the shorthand the loader takes
    assert list(check.iter_errors({**good, "method": "lorra"}))


def test_schema_to_stdout():
    r = CliRunner().invoke(main, ["schema"])
    assert r.exit_code == 0 and json.loads(r.output)["title"] == "peft-ray job"


@pytest.mark.parametrize("cmd", ["eval", "predict"])
def test_ray_address_is_the_cluster_and_address_a_deprecated_alias(cmd, tmp_path):
    r = CliRunner().invoke(main, [cmd, "--help"])
    assert "--ray-address" in r.output and "--local" in r.output
    assert "--address " not in r.output.replace("--ray-address", "")
    data = "--data" if cmd == "eval" else "--input"
    extra = [] if cmd == "eval" else ["--output", str(tmp_path / "o.jsonl")]
    r = CliRunner().invoke(main, [cmd, str(tmp_path / "nope"), data, "x.parquet", *extra, "--address", "auto"])
    assert "--address is deprecated" in r.output and "--ray-address" in r.output
    assert r.exit_code == 2 and "does not exist" in r.output


def test_submit_keeps_address_as_the_dashboard():
    r = CliRunner().invoke(main, ["submit", "--help"])
    assert "--address" in r.output and "dashboard" in r.output and "--ray-address" not in r.output
