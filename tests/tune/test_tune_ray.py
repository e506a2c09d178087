"""`peft-ray tune` on a real Ray runtime: 1-worker trials of the tiny BERT on the tiny data,
each training in its Tune actor through the same recipe as `peft-ray train`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from peft_ray.spec import validate_spec
from peft_ray.tune.history import read_history
from peft_ray.tune.runner import run_tune
from tests.tune.conftest import TEMPLATES, tune_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _history(out: Path, trial_id: str):
    return read_history(out / "tune" / trial_id, out / "trials" / trial_id)


def test_search_ranks_trials_and_exports_the_best(ray_runtime, tiny_bert, tiny_data, tmp_path):
    """4 trials (2 templates x 2 learning rates) run to the end; the leaderboard is each trial's
    own reports, ranked; the exported adapter reproduces the best trial's metric."""
    out = tmp_path / "search"
    tune = {"template": {"text": TEMPLATES}, "space": {"train.lr": {"grid": [0.05, 0.3]}},
            "scheduler": {"name": "fifo"}, "metric": "loss"}
    spec = validate_spec(tune_job(tiny_bert, tiny_data, out, tune))
    rows = run_tune(spec, job_path="job.yaml")

    assert len(rows) == 4 and all(r.status == "ok" and r.steps_trained == 2 for r in rows)
    assert {(r.template, r.params["train.lr"]) for r in rows} == {(t, lr) for t in TEMPLATES for lr in (0.05, 0.3)}
    assert [r.best_metric for r in rows] == sorted(r.best_metric for r in rows)  # loss: lowest first
    for r in rows:  # the leaderboard is what the trial itself reported
        losses = {h["step"]: h["loss"] for h in _history(out, r.trial_id)}
        assert sorted(losses) == [1, 2] and r.best_metric == min(losses.values())
        assert losses[r.best_step] == r.best_metric

    board = json.loads((out / "leaderboard.json").read_text())
    assert [t["trial_id"] for t in board["trials"]] == [r.trial_id for r in rows]
    with open(out / "leaderboard.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [float(c["best_loss"]) for c in csv_rows] == [r.best_metric for r in rows]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    _check_best_job(out, rows[0])
    assert _evaluate_adapter(out / "adapter", rows[0], tiny_data) == pytest.approx(rows[0].best_metric, rel=1e-5)


def _check_best_job(out: Path, best) -> None:
    text = (out / "best_job.yaml").read_text()
    assert text.splitlines()[0] == f"# peft-ray train {out / 'best_job.yaml'}"
    job = yaml.safe_load(text)
    assert "tune" not in job and job["template"]["text"] == best.template
    assert job["train"]["lr"] == best.params["train.lr"]
    # its re-run picks its best checkpoint by the metric the search ranked by (loss: lower is better)
    assert (job["train"]["metric_for_best"], job["train"]["greater_is_better"]) == ("loss", False)
    validate_spec(job)


def _evaluate_adapter(adapter: Path, best, tiny_data: Path) -> float:
    """Load the exported adapter into the frozen model (read_adapter) and score the validation set."""
    from peft_ray.adapter import read_adapter
    from peft_ray.tasks.classification.rows import head_rows
    from peft_ray.tasks.pipeline import make_preprocess_config
    from peft_ray.data.sources import iter_arrow
    from peft_ray.train.engine import build_model
    from peft_ray.tasks.classification.evaluate import evaluate

    state, cfg, extra = read_adapter(adapter)
    spec = validate_spec(extra["spec"])
    assert cfg["peft_type"] == "PROMPT_TUNING" and spec.template.text == best.template
    model, tok, path = build_model(spec)
    model.load_adapter_state(state)
    pp = make_preprocess_config(spec, path)
    tables = [head_rows(b, pp.task) for b in iter_arrow([str(tiny_data / "validation.parquet")])]

    class Frozen(torch.nn.Module):  # what evaluate() needs of an engine: .device and forward
        device = torch.device("cpu")

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, **kw):
            return self.m(**kw)

    return evaluate(Frozen(model), tables, spec.task.labels, tok.pad_token_id or 0,
                    spec.train.eval_batch_size)["loss"]


def test_asha_stops_a_bad_learning_rate(ray_runtime, tiny_bert, tiny_data, tmp_path):
    """Deterministic ASHA: one trial at a time; lr 1e-9 leaves the model as it is, lr 0.5 overshoots
    (validation loss up from ~0.693 to ~1.0 after one step), so at the first rung (step 1) the
    0.5 trial is below the 1e-9 trial's cutoff and is stopped; the 1e-9 trial runs all 3 steps."""
    out = tmp_path / "asha"
    tune = {"space": {"train.lr": {"grid": [1e-9, 0.5]}}, "metric": "loss", "max_concurrent_trials": 1,
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}}
    # no warmup: HF's schedule starts a warmup at lr 0, and step 1 must move the model
    rows = run_tune(validate_spec(tune_job(tiny_bert, tiny_data, out, tune,
                                           train={"max_steps": 3, "warmup_ratio": 0.0})))
    by_lr = {r.params["train.lr"]: r for r in rows}
    assert by_lr[1e-9].steps_trained == 3 and not by_lr[1e-9].stopped_early
    assert by_lr[0.5].stopped_early and by_lr[0.5].steps_trained == 1 and by_lr[0.5].status == "stopped"
    assert rows[0].trial_id == by_lr[1e-9].trial_id


def test_resume_skips_finished_trials(tiny_bert, tiny_data, tmp_path):
    """Interrupt `peft-ray tune` (Ctrl-C) once 2 of 3 trials have finished; --resume runs only
    the third: the finished trials' functions never start again."""
    out = tmp_path / "resume"
    tune = {"template": {"text": TEMPLATES + ["{soft} Movie review: {text}"]}, "scheduler": {"name": "fifo"},
            "max_concurrent_trials": 1}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(tune_job(tiny_bert, tiny_data, out, tune, train={"max_steps": 3})))
    cmd = [sys.executable, "-m", "peft_ray.cli", "tune", str(job)]
    # Every trial sleeps 10 s after its first step, so the third is surely still running
    # when the search is interrupted (3 s after the second finished).
    env = {**os.environ, "PEFT_RAY_SLOW_FIRST_STEP_S": "10"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env=env)
    try:
        finished = _wait_for_finished(out, n=2, steps=3, proc=proc, timeout=400)
        time.sleep(3)  # let Tune record the completions before the interrupt
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    said = proc.stdout.read().decode()
    assert proc.returncode == 130 and "continue it with --resume" in said, said[-3000:]
    started = {t: _trial_facts(out, t)["started"] for t in finished}

    r = subprocess.run(cmd + ["--resume", "-q"], capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # -q: the leaderboard and the best trial on the terminal; Ray's and Tune's output in tune.log
    log = (out / "tune.log").read_text()
    assert "best: " in r.stdout and "Trial status:" not in r.stdout and "Trial status:" in log
    assert len(r.stdout.splitlines()) < 15 < len(log.splitlines())
    board = json.loads((out / "leaderboard.json").read_text())["trials"]
    assert len(board) == 3 and all(t["steps_trained"] == 3 for t in board)
    for t in finished:
        assert _trial_facts(out, t)["started"] == started[t]  # not rerun
        assert [h["step"] for h in _history(out, t)] == [1, 2, 3]


def _trial_facts(out: Path, trial_id: str) -> dict:
    return json.loads((out / "trials" / trial_id / "trial.json").read_text())


def _wait_for_finished(out: Path, n: int, steps: int, proc, timeout: float) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tune exited early: {proc.stdout.read().decode()[-3000:]}")
        done = [d.name for d in (out / "tune").glob("*_*") if d.is_dir()
                and any(h["step"] == steps for h in read_history(d))]
        if len(done) >= n:
            return sorted(done)
        time.sleep(1)
    raise AssertionError(f"fewer than {n} trials finished in {timeout}s")


@pytest.mark.skipif(not os.environ.get("PEFT_RAY_TEST_TUNE_MULTIWORKER"),
                    reason="~5 min on 2 CPU cores; set PEFT_RAY_TEST_TUNE_MULTIWORKER=1 to run")
def test_two_worker_trials_drive_a_torch_trainer(ray_runtime, tiny_bert, tiny_data, tmp_path):
    """Multi-worker trials: a Tune function drives a TorchTrainer (TuneReportCallback). ASHA stops
    the 0.5 trial at step 1, and its worker placement group does not outlive it."""
    out = tmp_path / "two"
    tune = {"space": {"train.lr": {"grid": [1e-9, 0.5]}}, "metric": "loss", "max_concurrent_trials": 1,
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}}
    job = tune_job(tiny_bert, tiny_data, out, tune, train={"max_steps": 3}, scaling={"num_workers": 2})
    rows = run_tune(validate_spec(job))
    by_lr = {r.params["train.lr"]: r for r in rows}
    assert by_lr[1e-9].steps_trained == 3 and by_lr[0.5].stopped_early and by_lr[0.5].steps_trained == 1
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    deadline = time.time() + 60
    while time.time() < deadline:
        left = [g for g in ray_runtime.util.placement_group_table().values() if g["state"] == "CREATED"]
        if not left:
            break
        time.sleep(2)
    assert not left, left


def test_search_over_a_token_classification_job_ranks_by_its_primary_metric(ray_runtime, tmp_path):
    """Tune works for every task: a NER search, ranked by the task's own primary metric (entity_f1,
    the default tune.metric) and checked against the metrics that task reports."""
    from tests.tasks import synthetic as S
    from tests.tasks.conftest import make_data, task_job

    data = make_data(tmp_path / "data", S.ner_rows, n_train=64, n_val=16)
    job = task_job(S.make_model(tmp_path / "bert", "bert"), data, tmp_path / "search",
                   {"type": "token_classification", "labels": ["PER", "LOC", "ORG"]}, {"text": "{soft} {tokens}"},
                   {"name": "prompt_tuning", "num_virtual_tokens": 4, "init": "random"}, steps=2, lr=0.05)
    job["train"]["eval_every"] = 1
    job["tune"] = {"space": {"train.lr": {"grid": [0.01, 0.1]}}, "scheduler": {"name": "fifo"}}
    spec = validate_spec(job)
    assert spec.tune.metric == "entity_f1" and spec.tune.mode == "max"
    rows = run_tune(spec, job_path="job.yaml")
    assert len(rows) == 2 and all(r.status == "ok" and r.best_metric is not None for r in rows)
    assert [r.best_metric for r in rows] == sorted((r.best_metric for r in rows), reverse=True)
    assert json.loads((tmp_path / "search" / "adapter" / "adapter_config.json").read_text())["task_type"] == "TOKEN_CLS"



def test_resumed_trial_keeps_its_earlier_reports(tiny_bert, tiny_data, tmp_path):
    """An interrupted trial, faked deterministically: a finished 1-trial search whose trial Tune's
    state marks as still running and whose last checkpoint is gone. --resume starts it again
    from its step-2 checkpoint; Tune's result.json then holds only step 3, and the leaderboard
    still has steps 1-3 (the trial's own history.jsonl)."""
    out = tmp_path / "again"
    tune = {"space": {"train.lr": {"grid": [0.05]}}, "metric": "loss",
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(tune_job(tiny_bert, tiny_data, out, tune, train={"max_steps": 3})))
    cmd = [sys.executable, "-m", "peft_ray.cli", "tune", str(job), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (tid,) = [t["trial_id"] for t in json.loads((out / "leaderboard.json").read_text())["trials"]]
    first = {h["step"]: h["loss"] for h in _history(out, tid)}
    assert sorted(first) == [1, 2, 3]

    state = max((out / "tune").glob("experiment_state-*.json"))
    saved = json.loads(state.read_text())
    trial = json.loads(saved["trial_data"][0][0])
    trial["status"] = "RUNNING"
    saved["trial_data"][0][0] = json.dumps(trial)
    state.write_text(json.dumps(saved))
    shutil.rmtree(out / "trials" / tid / "checkpoints" / "checkpoint_00000003")

    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tune_result = [json.loads(x)["step"] for x in (out / "tune" / tid / "result.json").read_text().splitlines()]
    assert tune_result == [3]            # what Tune keeps of a resumed trial: the new attempt only
    (row,) = json.loads((out / "leaderboard.json").read_text())["trials"]
    assert [s for s, _ in row["curve"]] == [1, 2, 3] and row["steps_trained"] == 3
    every = {1: first[1], 2: first[2], 3: row["curve"][2][1]}      # steps 1-2 from the first attempt
    assert (row["best_step"], row["best_metric"]) == min(every.items(), key=lambda kv: (kv[1], kv[0]))
