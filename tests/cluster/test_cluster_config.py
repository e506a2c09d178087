"""cluster.yaml passes Ray's own cluster-launcher validation (schema + cross checks, no cloud calls)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def _validated(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(cfg))   # what `ray up` does before it talks to the cloud
    validate_config(full)
    return full


@pytest.fixture(scope="module")
def cfg() -> dict:
    text = CLUSTER_YAML.read_text()
    assert text.startswith("# ray up cluster.yaml")
    return yaml.safe_load(text)


def test_cluster_yaml_passes_ray_validation(cfg):
    full = _validated(cfg)
    head, gpu = full["available_node_types"]["head.cpu"], full["available_node_types"]["worker.gpu"]
    assert full["head_node_type"] == "head.cpu" and head["max_workers"] == 0
    assert "g5" in gpu["node_config"]["InstanceType"] and "g" not in head["node_config"]["InstanceType"][:1]
    assert 0 == gpu["min_workers"] < gpu["max_workers"] <= full["max_workers"]


def test_cluster_yaml_installs_peft_ray_with_token_auth_and_metrics(cfg):
    setup = " ".join(cfg["setup_commands"])
    assert setup.index("torch") < setup.index("pip install --quiet -e ~/peft-ray")  # own CUDA torch first
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for cmds in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):
        start = " ".join(cmds)
        assert "RAY_AUTH_MODE=token ray start" in start and "--metrics-export-port=8080" in start
    assert "runs/" in cfg["rsync_exclude"]


def test_validation_is_real(cfg):
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["worker.gpu"]["min_wokers"] = 1   # typo: the schema forbids unknown keys
    with pytest.raises(jsonschema.ValidationError):
        _validated(bad)
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["worker.gpu"]["min_workers"] = 9  # more than max_workers
    with pytest.raises(ValueError):
        _validated(bad)
