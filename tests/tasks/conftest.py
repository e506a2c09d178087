"""Fixtures for the task tests: tiny models from config (built once per session) and a helper
that trains a job with `--local` semantics (same recipe, DeepSpeed engine, one process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_rows
from tests.tasks import synthetic as S


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-models")
    cache = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = S.make_model(root / family, family)
        return cache[family]
    return get


def make_data(root: Path, rows_fn, n_train: int = 512, n_val: int = 48) -> Path:
    write_rows(root / "train.parquet", rows_fn(n_train, 1))
    write_rows(root / "validation.parquet", rows_fn(n_val, 2))
    return root


def task_job(model: Path, data: Path, out: Path, task: dict, template: dict, method: dict, steps: int,
             lr: float, **extra) -> dict:
    # dropout 0: the learning bars and pinned figures of these tiny-model tests were set when the
    # base's dropout was (by a defect) off; tests/train/test_train_mode.py runs with the model's own.
    job = {"name": "tiny-task", "model": {"name_or_path": str(model), "max_length": 32, "dropout": 0.0}, "task": task,
           "template": template, "method": method, "data": {"root": str(data)},
           "train": {"max_steps": steps, "batch_size": 16, "lr": lr, "eval_every": steps, "seed": 0},
           "scaling": {"num_workers": 1}, "output": {"dir": str(out)}}
    for k, v in extra.items():
        job[k] = {**job.get(k, {}), **v}
    return job


def train_local(job: dict) -> dict:
    from peft_ray.spec import validate_spec
    from peft_ray.train.local import run_local

    return run_local(validate_spec(job), overwrite=True)


LLAMA_LORA = {"name": "lora", "r": 16, "lora_alpha": 32, "modules_to_save": ["lm_head"],
              "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
GPT2_LORA = {"name": "lora", "r": 16, "lora_alpha": 32, "modules_to_save": ["lm_head"],
             "target_modules": ["c_attn", "c_proj", "c_fc"]}
T5_LORA = {"name": "lora", "r": 16, "lora_alpha": 32, "modules_to_save": ["lm_head"],
           "target_modules": ["q", "k", "v", "o", "wi", "wo"]}
