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


def test_a_task_says_which_of_its_metrics_are_minimised(regression_task, tiny_bert, tmp_path):
    """Which way a metric is better was guessed from its name: only `loss` and `*_loss` were
    minimised, so a task's `mse` (or `wer`, `hamming`) picked the worst checkpoint as adapter/ and
    ranked a search backwards (a maintainer review). The task declares it (Task.minimized)."""
    from peft_ray.tasks import get_task
    from peft_ray.train.best import best_policy

    job = job_dict(tiny_bert, tmp_path, tmp_path / "out", template={"text": "{soft} {text}", "verbalizer": None},
                   tune={"space": {"train.lr": {"choice": [1e-3, 1e-2]}}})
    job["task"] = {"type": "regression", "target_column": "score"}
    spec = validate_spec(job)
    assert spec.tune.metric == "mse" and spec.tune.mode == "min"
    assert not best_policy(spec.train, get_task("regression")).greater
    assert get_task("classification").lower_is_better("loss") and not get_task("classification").lower_is_better("mse")



def test_preflight_counts_the_rows_the_task_says_it_keeps(regression_task, tiny_bert, tmp_path, monkeypatch):
    """Which rows count was written twice: once in preflight (the supervision column present, text
    not blank, NER's special case) and once in each row builder, so a task whose builder skips more
    rows had `validate`, the step count and the summary's skipped rows disagree with training
    (a maintainer review). Preflight now asks the task (Task.usable)."""
    import pyarrow.compute as pc

    from peft_ray.preflight import run_preflight

    data = tmp_path / "data"
    rows = _rows(40, 3)
    rows["score"] = [float(i % 4) - 1.0 for i in range(40)]     # 10 rows of -1.0
    write_rows(data / "train.parquet", rows)
    write_rows(data / "validation.parquet", _rows(8, 4))
    job = job_dict(tiny_bert, data, tmp_path / "out", template={"text": "{soft} {text}", "verbalizer": None},
                   train={"batch_size": 4})
    job["task"] = {"type": "regression", "target_column": "score"}
    spec = validate_spec(job)
    assert (run_preflight(spec).train.usable, run_preflight(spec).steps_per_epoch) == (40, 10)
    base = type(regression_task).usable
    monkeypatch.setattr(type(regression_task), "usable", lambda self, cfg, batch, cols, text: pc.and_(
        base(self, cfg, batch, cols, text), pc.greater_equal(batch.column(cfg.target_column), 0.0)))
    facts = run_preflight(spec)
    assert (facts.train.usable, facts.train.skipped, facts.steps_per_epoch) == (30, 10, 7)   # 30 // 4
