"""2-worker training on a real Ray runtime with real DeepSpeed engines (gloo, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peft_ray.spec import validate_spec
from peft_ray.train.driver import run_train
from tests.conftest import job_dict

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _train(tiny_bert, tiny_data, out: Path, **sections):
    spec = validate_spec(job_dict(tiny_bert, tiny_data, out, **sections))
    return spec, run_train(spec)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_two_workers_each_zero_stage(ray_runtime, tiny_bert, tiny_data, tmp_path, stage):
    spec, metrics = _train(tiny_bert, tiny_data, tmp_path / f"z{stage}", deepspeed={"zero_stage": stage})
    assert metrics["step"] == 4
    assert metrics["n_eval"] == 70  # every validation row, exactly once, across 2 workers
    for key in ("accuracy", "macro_f1", "loss", "samples_per_s", "tokens_per_s"):
        assert key in metrics
    saved = json.loads((tmp_path / f"z{stage}" / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"]
    state = load_file(str(tmp_path / f"z{stage}" / "adapter" / "adapter_model.safetensors"))
    # Full, gathered values even under ZeRO-3 (where each rank holds a partition).
    assert state["prompt_embeddings"].shape == (4, 32)
    assert state["base_model.classifier.weight"].shape == (2, 32)
    assert all(v.abs().sum() > 0 for v in state.values())
    assert (tmp_path / f"z{stage}" / "job.yaml").exists()


def test_zero3_adapter_matches_zero2(ray_runtime, tiny_bert, tiny_data, tmp_path):
    """Same seed, same data: the ZeRO-3 adapter (gathered) equals the ZeRO-2 one."""
    _train(tiny_bert, tiny_data, tmp_path / "a", deepspeed={"zero_stage": 2}, train={"max_steps": 2})
    _train(tiny_bert, tiny_data, tmp_path / "b", deepspeed={"zero_stage": 3}, train={"max_steps": 2})
    a = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_resume_matches_uninterrupted(ray_runtime, tiny_bert, tiny_data, tmp_path, monkeypatch):
    """Kill a worker after step 3's checkpoint with no retries, then --resume: same result."""
    common = dict(train={"max_steps": 6, "checkpoint_every": 3, "eval_every": 6, "max_failures": 0})
    _, full = _train(tiny_bert, tiny_data, tmp_path / "full", **common)

    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "cut", **common))
    monkeypatch.setenv("PEFT_RAY_FAIL_AT_STEP", "4")
    with pytest.raises(Exception):
        run_train(spec)
    monkeypatch.delenv("PEFT_RAY_FAIL_AT_STEP")
    resumed = run_train(spec, resume=True)
    assert resumed["step"] == 6
    assert resumed["accuracy"] == pytest.approx(full["accuracy"], abs=1e-9)
    assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-4)
