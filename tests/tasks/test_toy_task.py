"""Adding a task is one folder plus one registration line: a toy text-regression task, defined
only under tests/ (tests/tasks/toy_regression/), trains and evaluates through `train --local`."""

from __future__ import annotations

import json
import math

import pytest

from peft_ray.spec import validate_spec
from peft_ray.tasks import TASKS, register
from peft_ray.train.local import run_local
from tests.conftest import job_dict, write_rows
from tests.tasks.toy_regression import Regression


@pytest.fixture(scope="module")
def regression_task():
    if "regression" not in TASKS:
        register(Regression())                  # the one registration line
    return TASKS.get("regression")


def _rows(n: int, seed: int) -> dict:
    import random

    rng = random.Random(seed)
    words = ["good", "bad", "fine", "dull", "great"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(n)]
    return {"text": texts, "score": [t.count("good") + t.count("great") - t.count("bad") * 0.5 for t in texts]}


def test_toy_regression_task_trains_and_evaluates_locally(regression_task, tiny_bert, tmp_path):
    data = tmp_path / "data"
    write_rows(data / "train.parquet", _rows(128, 1))
    write_rows(data / "validation.parquet", _rows(30, 2))
    job = job_dict(tiny_bert, data, tmp_path / "out", task={"type": "regression", "target_column": "score"},
                   template={"text": "{soft} {text}", "verbalizer": None}, scaling={"num_workers": 1},
                   train={"max_steps": 6, "eval_every": 3, "batch_size": 8, "lr": 0.05})
    job["task"] = {"type": "regression", "target_column": "score"}
    spec = validate_spec(job)
    assert type(spec.task).__name__ == "RegressionConfig"
    metrics = run_local(spec, overwrite=True)
    assert metrics["n_eval"] == 30 and math.isfinite(metrics["mse"]) and metrics["mse"] == metrics["loss"]
    adapter = tmp_path / "out" / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS"
    assert json.loads((adapter / "peft_ray.json").read_text())["spec"]["task"] == {"type": "regression",
                                                                                   "target_column": "score"}


def test_unknown_task_type_names_the_registered_ones():
    from peft_ray.errors import SpecError

    with pytest.raises(SpecError, match="task.type: unknown task 'clasification'.*did you mean"):
        validate_spec({"task": {"type": "clasification", "labels": ["a", "b"]}})
