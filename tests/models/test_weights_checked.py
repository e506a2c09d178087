"""models.check_weights_match records a match by config.json, the safetensors headers and the
transformers version, and builds the same folder on the meta device only once."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import peft_ray.weights_checked as wc
from peft_ray.errors import SpecError
from peft_ray.models import check_weights_match


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT_RAY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "checked-weights"


@pytest.fixture()
def model(tiny_bert, tmp_path):
    m = tmp_path / "model"
    shutil.copytree(tiny_bert, m)
    return m


def _builds(monkeypatch) -> list:
    """Counts the meta-device builds check_weights_match asks transformers for."""
    import transformers

    calls, real = [], transformers.AutoModel.from_pretrained
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def test_a_match_is_built_once_then_recorded(model, cache, monkeypatch):
    builds = _builds(monkeypatch)
    check_weights_match(str(model))
    check_weights_match(str(model))
    assert len(builds) == 1 and len(list(cache.iterdir())) == 1


def test_new_values_keep_the_key_and_new_shapes_change_it(model, cache):
    key = wc.match_key(model)
    weights = next(model.glob("*.safetensors"))
    state = load_file(str(weights))
    save_file({k: v + 1 for k, v in state.items()}, str(weights), metadata={"format": "pt"})
    assert wc.match_key(model) == key                # values do not enter the check
    name = next(k for k, v in state.items() if v.dim() == 2)
    save_file({**state, name: torch.zeros(3, 3)}, str(weights), metadata={"format": "pt"})
    assert wc.match_key(model) != key


def test_a_changed_config_is_checked_again_and_refused(model, cache):
    check_weights_match(str(model))
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "hidden_size": cfg["hidden_size"] * 2}))
    with pytest.raises(SpecError):
        check_weights_match(str(model))
    assert len(list(cache.iterdir())) == 1            # the refused folder is not recorded


def test_folders_with_their_own_code_are_never_recorded(model, cache):
    check_weights_match(str(model), trust_remote_code=True)
    assert not cache.exists()


def test_what_cannot_be_keyed(tmp_path, model, cache):
    assert wc.match_key(tmp_path / "absent") is None
    next(model.glob("*.safetensors")).write_bytes(b"\x01")     # too short for a header
    assert wc.match_key(model) is None
