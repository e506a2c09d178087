"""The per-token tasks on 2 real Ray Train workers under DeepSpeed ZeRO-3 (gloo, CPU).

ZeRO-3 forwards are collective, so this exercises the lockstep evaluation: decoding
steps until every worker is done, with fillers for a worker that runs out of rows,
and every validation row scored exactly once (gathered across workers)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from peft_ray.spec import validate_spec
from peft_ray.train.driver import run_train
from tests.tasks import synthetic as S
from tests.tasks.conftest import LLAMA_LORA, make_data, task_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_generation_zero3_two_workers(ray_runtime, tiny_models, tmp_path):
    data = make_data(tmp_path / "data", S.key_value_rows, n_val=21)   # odd: the workers' shares differ
    job = task_job(tiny_models("llama"), data, tmp_path / "out", {"type": "generation"},
                   {"text": "key {key} value : {label}"}, LLAMA_LORA, steps=60, lr=0.01,
                   scaling={"num_workers": 2}, deepspeed={"zero_stage": 3}, train={"eval_batch_size": 4})
    m = run_train(validate_spec(job))
    assert m["n_eval"] == 21 and m["step"] == 60
    assert m["exact_match"] >= 0.9, m
    state = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    assert all(v.numel() and v.abs().sum() > 0 for v in state.values())   # gathered, not empty partitions
    cfg = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "CAUSAL_LM"


def test_ner_prefix_two_workers(ray_runtime, tiny_models, tmp_path):
    data = make_data(tmp_path / "data", S.ner_rows, n_val=33)
    job = task_job(tiny_models("bert"), data, tmp_path / "out",
                   {"type": "token_classification", "labels": ["PER", "LOC", "ORG"]}, {"text": "{soft} {tokens}"},
                   {"name": "prefix_tuning", "num_virtual_tokens": 8}, steps=60, lr=0.01,
                   scaling={"num_workers": 2}, deepspeed={"zero_stage": 2})
    m = run_train(validate_spec(job))
    assert m["n_eval"] == 33 and m["entity_f1"] >= 0.9, m
    cfg = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "TOKEN_CLS" and cfg["modules_to_save"] == ["classifier"]
