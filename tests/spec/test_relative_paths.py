"""Relative paths are resolved once, at the CLI, against the directory the command runs in: Ray
workers and Tune trials run elsewhere. method.init_from and data.train without data.root were
left relative; a wrong init_from was found only after the model loaded."""

from __future__ import annotations

import pytest
import yaml

from peft_ray.errors import SpecError
from peft_ray.preflight import run_preflight
from peft_ray.spec import load_spec
from tests.conftest import job_dict


def _job(tmp_path, tiny_bert, tiny_data, method, **sections):
    raw = job_dict(tiny_bert, tiny_data, tmp_path / "out", **sections)
    raw["method"] = method
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_split_names_without_a_root_and_init_from_become_absolute(tmp_path, tiny_bert, tiny_data, monkeypatch):
    monkeypatch.chdir(tiny_data.parent)
    job = _job(tmp_path, tiny_bert, tiny_data, data={"root": None, "train": f"{tiny_data.name}/train.parquet",
                                                     "validation": f"{tiny_data.name}/validation.parquet"},
               method={"name": "lora", "init_from": "runs/x/adapter"})
    spec = load_spec(str(job))
    assert spec.data.train == str(tiny_data / "train.parquet")
    assert spec.data.validation == str(tiny_data / "validation.parquet")
    assert spec.method.init_from == str(tiny_data.parent / "runs" / "x" / "adapter")


def test_a_missing_init_from_fails_in_the_preflight(tmp_path, tiny_bert, tiny_data):
    job = _job(tmp_path, tiny_bert, tiny_data, method={"name": "prompt_tuning", "num_virtual_tokens": 4,
                                                       "init_from": str(tmp_path / "nowhere")})
    with pytest.raises(SpecError, match="method.init_from: .*nowhere.* is not an HF PEFT adapter folder"):
        run_preflight(load_spec(str(job)))
