"""What a run leaves behind: the curve (metrics.jsonl, TensorBoard events, curves.png),
the best adapter next to the last one, and early stopping. --local on the tiny fixtures."""

from __future__ import annotations

import json
import re

import pytest

from peft_ray.spec import validate_spec
from peft_ray.train.best import BestPolicy, intervals, should_stop, update_best
from peft_ray.train.checkpoint import TrainerState
from peft_ray.train.local import run_local
from peft_ray.train.runlog import read_log
from tests.conftest import job_dict


def _run(tiny_bert, tiny_data, out, **train):
    spec = validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                  train={"max_steps": 6, "eval_every": 2, **train}))
    return run_local(spec)


def _tensorboard_scalars(logdir):
    """Read the event files back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_curves_on_disk(tiny_bert, tiny_data, tmp_path):
    m = _run(tiny_bert, tiny_data, tmp_path / "run")
    rows = read_log(tmp_path / "run" / "metrics.jsonl")
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]  # a short run logs every step
    assert {"loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "epoch"} <= set(train[0])
    assert [r["step"] for r in evals] == [2, 4, 6] and "accuracy" in evals[0] and "loss" in evals[0]
    # metrics.json: the run's mean train loss (every micro-batch), fractional epochs
    assert m["train_loss"] == pytest.approx(sum(r["loss"] for r in train) / len(train), rel=1e-6)
    assert 0 < m["epoch"] == pytest.approx(train[-1]["epoch"])

    scalars = _tensorboard_scalars(tmp_path / "run" / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert scalars["train/loss"][-1][1] == pytest.approx(train[-1]["loss"], rel=1e-5)
    assert {"train/grad_norm", "train/lr", "eval/accuracy", "eval/loss"} <= set(scalars)
    assert [s for s, _ in scalars["eval/accuracy"]] == [2, 4, 6]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000


def test_best_and_last_adapters(tiny_bert, tiny_data, tmp_path):
    out = tmp_path / "run"
    m = _run(tiny_bert, tiny_data, out, metric_for_best="loss", keep_checkpoints=1)
    evals = [r for r in read_log(out / "metrics.jsonl") if r["kind"] == "eval"]
    best = min(evals, key=lambda r: r["loss"])
    assert m["best_step"] == best["step"] and m["best_metric"] == pytest.approx(best["loss"])
    assert f"step {best['step']}" in m["best"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter_last" / "adapter_model.safetensors").is_file()
    kept = sorted(p.name for p in (out / "checkpoints").glob("checkpoint_*"))
    assert f"checkpoint_{best['step']:08d}" in kept and "checkpoint_00000006" in kept  # best never pruned
    same = (out / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (out / "checkpoints" / f"checkpoint_{best['step']:08d}" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert same


def test_best_policy_and_early_stopping():
    acc = BestPolicy("accuracy", greater=True, patience=2)
    s = TrainerState()
    for step, value in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.7)]:
        s.global_step = step
        update_best(acc, s, {"accuracy": value})
    assert (s.best_step, s.evals_since_best, should_stop(acc, s)) == (2, 2, True)  # ties are not better
    loss = BestPolicy("loss", greater=False)
    assert loss.score({"loss": 0.2}) > loss.score({"loss": 0.3}) and loss.score({}) is None


def test_default_intervals():
    from peft_ray.spec.schema import TrainSpec

    assert intervals(TrainSpec(), 94) == (24, 24)          # 4 evaluations per epoch, a checkpoint at each
    assert intervals(TrainSpec(eval_every=100, checkpoint_every=30), 94) == (100, 30)  # explicit values win


def test_early_stopping_run(tiny_bert, tiny_data, tmp_path):
    m = _run(tiny_bert, tiny_data, tmp_path / "run", eval_every=1, max_steps=12, lr=1e-9,
             metric_for_best="accuracy", early_stopping_patience=1)
    assert m["step"] < 12 and m["best_step"] < m["step"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == m["step"]


def test_no_matplotlib_is_a_message_not_a_crash(tmp_path, monkeypatch, capsys):
    """Both curves.png writers (train's and tune's) skip the picture with a clear warning."""
    from peft_ray.train.runlog import plot_curves
    from peft_ray.tune.results import plot_curves as tune_plot

    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 0.7, "lr": 0.1}\n')
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    assert plot_curves(str(tmp_path)) is None
    assert tune_plot([], tmp_path, "accuracy") is None
    out = capsys.readouterr().out
    assert out.count("matplotlib is not installed") == 2 and "pip install matplotlib" in out


def test_unknown_metric_for_best_is_refused_before_training(tiny_bert, tiny_data, tmp_path):
    from peft_ray.errors import SpecError

    with pytest.raises(SpecError, match=r"train.metric_for_best: 'acuracy'.*accuracy"):
        _run(tiny_bert, tiny_data, tmp_path / "run", metric_for_best="acuracy")


@pytest.mark.parametrize("metric, message", [
    ("f1/neutral", "'f1/neutral' is not a classification evaluation metric.*for a label of task.labels"),
    ("bleu", "'bleu' is not a classification evaluation metric"),
])
def test_validate_refuses_a_metric_for_best_evaluation_never_reports(tiny_bert, tiny_data, tmp_path, metric, message):
    """validate said ok to both; train then refused 'bleu' and ran f1/<unknown label> with no best at all."""
    import yaml
    from click.testing import CliRunner

    from peft_ray.cli import main

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "run")))
    r = CliRunner().invoke(main, ["validate", str(job), f"train.metric_for_best={metric}"])
    assert r.exit_code == 2 and re.search(f"train.metric_for_best: {message}", r.output), r.output
    ok = CliRunner().invoke(main, ["validate", str(job), "train.metric_for_best=f1/positive"])
    assert ok.exit_code == 0, ok.output


def test_a_hand_edited_metrics_log_costs_no_outputs(tmp_path, capsys):
    """--resume reads the run's metrics.jsonl back: lines that are not train/eval rows are skipped,
    and a curve that cannot be drawn is a warning, so metrics.json is still written after it."""
    from peft_ray.train.runlog import plot_curves, read_log, trim_log

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"kind": "train", "step": 1, "loss": 0.7, "lr": 0.1}\n{"step": 1, "note": "hand-edited"}\n'
                   '[1]\n"text"\n{"kind": "train", "step": 2, "loss": 0.6, "lr": 0.1}\n')
    assert [r["step"] for r in read_log(log)] == [1, 2]
    trim_log(tmp_path, 1)
    assert [r["step"] for r in read_log(log)] == [1]
    log.write_text('{"kind": "train", "step": 1, "loss": "n/a", "lr": {"a": 1}}\n')
    assert plot_curves(str(tmp_path)) is None
    assert "curves.png was not drawn" in capsys.readouterr().out


def test_a_tune_trials_lines_say_which_trial(capsys):
    """Concurrent trials printed the same "eval @ step 2: ..." lines with nothing to tell them apart."""
    from peft_ray.train.runlog import RunLog

    RunLog(None, 10, 0, rank0=True, bar="none", tag="trial 1a2b_00003").echo("eval @ step 2: accuracy 0.5")
    RunLog(None, 10, 0, rank0=True, bar="none").echo("eval @ step 2: accuracy 0.5")
    assert capsys.readouterr().out.splitlines() == ["[peft-ray] trial 1a2b_00003: eval @ step 2: accuracy 0.5",
                                                    "[peft-ray] eval @ step 2: accuracy 0.5"]


def test_tensorboard_after_a_restart_holds_every_step_once_and_every_evaluation(tmp_path):
    """tensorboardX writes events from a thread whose flush() leaves queued ones behind: a worker
    killed after an evaluation lost it from TensorBoard for good (the best step's, in a review), and
    a resumed run showed the steps it redid twice. TensorBoard now starts from metrics.jsonl's rows."""
    from peft_ray.train.runlog import RunLog

    first = RunLog(str(tmp_path), total_steps=6, start_step=0, rank0=True, bar="none")
    for step in range(1, 5):
        first.train_step(step, step / 6, 0.1, 1.0)
        if step % 2 == 0:
            first.evaluation(step, {"accuracy": step / 10})
    # killed here, its writer never closed; the run resumes from its step-2 checkpoint
    again = RunLog(str(tmp_path), total_steps=6, start_step=2, rank0=True, bar="none")
    for step in range(3, 7):
        again.train_step(step, step / 6, 0.1, 1.0)
        if step % 2 == 0:
            again.evaluation(step, {"accuracy": step / 10 + 0.01})
    again.close()
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert scalars["eval/accuracy"] == [(2, pytest.approx(0.2)), (4, pytest.approx(0.41)), (6, pytest.approx(0.61))]
    assert [r["step"] for r in read_log(tmp_path / "metrics.jsonl") if r["kind"] == "eval"] == [2, 4, 6]
