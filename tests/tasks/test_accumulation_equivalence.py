"""grad_accum changes memory, not the run (HF Trainer's rule): at one global batch, 16 x 1 and 8 x 2
see the same rows each step, reach the same adapter, and log the same loss, token-level tasks
included (HF logs the step's token-weighted mean)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.tasks import synthetic as S
from tests.tasks.conftest import make_data, task_job, train_local


def _run(tiny_models, data, out, ga: int):
    task = {"type": "token_classification", "labels": ["PER", "LOC", "ORG"]}
    job = task_job(tiny_models("bert"), data, out, task, {"text": "{soft} {tokens}"},
                   {"name": "prompt_tuning", "num_virtual_tokens": 4}, steps=3, lr=0.05,
                   train={"grad_accum": ga, "group_by_length": True})
    train_local(job)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if "loss" in r and "step" in r and "lr" in r]
    return losses, load_file(str(out / "adapter_last" / "adapter_model.safetensors"))


def test_grad_accum_trains_and_logs_the_same_run(tiny_models, tmp_path):
    data = make_data(tmp_path / "data", S.ner_rows, n_train=96, n_val=16)
    one, a1 = _run(tiny_models, data, tmp_path / "ga1", 1)
    two, a2 = _run(tiny_models, data, tmp_path / "ga2", 2)
    assert one and len(one) == len(two)
    assert two == pytest.approx(one, rel=1e-4)
    assert a1.keys() == a2.keys()
    for k in a1:
        torch.testing.assert_close(a2[k], a1[k], atol=1e-5, rtol=1e-4)
