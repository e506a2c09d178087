"""--local runs the same recipe in-process; with 1 Ray worker it gives the same metrics."""

from __future__ import annotations

import shutil

import pytest

from peft_ray.spec import validate_spec
from peft_ray.train.local import run_local
from tests.conftest import job_dict


def _spec(tiny_bert, tiny_data, out, **sections):
    sections.setdefault("scaling", {"num_workers": 1})
    return validate_spec(job_dict(tiny_bert, tiny_data, out, **sections))


def test_local_resume_matches_uninterrupted(tiny_bert, tiny_data, tmp_path):
    train = {"max_steps": 6, "checkpoint_every": 3, "eval_every": 6}
    full = run_local(_spec(tiny_bert, tiny_data, tmp_path / "full", train=train))
    cut = _spec(tiny_bert, tiny_data, tmp_path / "cut", train=train)
    # Simulate a run that died after its step-3 checkpoint: drop the later one.
    run_local(cut)

    ckpts = sorted((tmp_path / "cut" / "checkpoints").glob("checkpoint_*"))
    assert [c.name for c in ckpts] == ["checkpoint_00000003", "checkpoint_00000006"]
    shutil.rmtree(ckpts[-1])
    resumed = run_local(cut, resume=True)
    assert resumed["step"] == 6
    # the phase clocks are the run's totals; the breakdown is this attempt's, within its wall time
    assert 0 < resumed["carried_train_seconds"] < resumed["train_seconds"]
    training = float(resumed["time_phases"].split("training ")[1].split(" ")[0])
    assert training <= resumed["train_seconds"] - resumed["carried_train_seconds"] + 0.05
    assert resumed["accuracy"] == pytest.approx(full["accuracy"], abs=1e-9)
    assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-5)


@pytest.mark.ray
@pytest.mark.slow
def test_local_equals_one_ray_worker(ray_runtime, tiny_bert, tiny_data, tmp_path):
    from peft_ray.train.driver import run_train

    local = run_local(_spec(tiny_bert, tiny_data, tmp_path / "local"))
    ray_m = run_train(_spec(tiny_bert, tiny_data, tmp_path / "ray"))
    assert ray_m["accuracy"] == pytest.approx(local["accuracy"], abs=1e-9)
    assert ray_m["loss"] == pytest.approx(local["loss"], rel=1e-4)


def test_metrics_carry_a_time_breakdown(tiny_bert, tiny_data, tmp_path):
    """metrics.json says where the wall time went (issue: time to result), and the phases add up."""
    from peft_ray.summary import render_summary

    m = run_local(_spec(tiny_bert, tiny_data, tmp_path / "run", train={"max_steps": 4, "eval_every": 2}))
    for key in ("setup_seconds", "data_seconds", "train_seconds", "eval_seconds", "checkpoint_seconds", "save_seconds"):
        assert m[key] >= 0, key
    assert m["eval_seconds"] > 0 and m["checkpoint_seconds"] > 0           # 2 evaluations, a save before the last
    assert m["save_seconds"] > 0                                          # adapter/, adapter_last/, curves.png
    parts = sum(m[k] for k in ("setup_seconds", "data_seconds", "train_seconds", "eval_seconds",
                               "checkpoint_seconds", "save_seconds"))
    assert parts <= m["wall_seconds"]
    assert m["time_phases"].startswith("model + engine ") and "| save " in m["time_phases"]
    assert "start-up + other" in m["time_phases"]
    assert "time by phase (s)" in render_summary(m)
    # after --resume the rates and training clock are the run's, the wall time this process's
    # (a summary showed more training time than wall time, unlabelled; a review finding)
    resumed = render_summary({**m, "carried_train_seconds": 5.0})
    assert "train time, all attempts (s)" in resumed and "wall time, this attempt (s)" in resumed


def test_local_layout_shares_the_worker_groups_cpus_among_its_ranks():
    """--local runs scaling.local_ranks processes (1 by default), up to the cores; they share the
    threads the worker group would have had (num_workers x cpus_per_worker, up to the cores); an
    explicit torch_threads stays; a GPU job runs one rank."""
    from peft_ray.spec.schema import ScalingSpec
    from peft_ray.train.local_ranks import layout

    assert layout(ScalingSpec(num_workers=2), 4) == (1, 2)
    assert layout(ScalingSpec(num_workers=2, cpus_per_worker=1.5), 4) == (1, 3)
    assert layout(ScalingSpec(num_workers=8, cpus_per_worker=4), 4) == (1, 4)
    assert layout(ScalingSpec(num_workers=2, local_ranks=2), 4) == (2, 1)
    assert layout(ScalingSpec(num_workers=2, cpus_per_worker=2, local_ranks=2), 4) == (2, 2)
    assert layout(ScalingSpec(num_workers=3, local_ranks=3), 2) == (2, 1)
    assert layout(ScalingSpec(num_workers=2, torch_threads=1), 4) == (1, 1)
    assert layout(ScalingSpec(num_workers=2, use_gpu=True, local_ranks=2), 4) == (1, None)


def test_a_resumed_run_keeps_and_exports_the_earlier_runs_best(tmp_path):
    """After --resume the reporter starts empty; the best may be a checkpoint of the run before.
    It was pruned as an old one, and adapter/ became the last step's."""
    from peft_ray.train.report import LocalReporter

    import json

    from peft_ray.train.checkpoint import sha256

    rep = LocalReporter(str(tmp_path), keep=1, resume_from=None)
    earlier = tmp_path / "checkpoints" / "checkpoint_00000002"
    earlier.mkdir(parents=True)
    (earlier / "trainer_state.json").write_text(json.dumps({"global_step": 2}))   # one that validates:
    (earlier / "MANIFEST.rank0.json").write_text(                                 # it becomes adapter/
        json.dumps({"trainer_state.json": sha256(earlier / "trainer_state.json")}))
    for step in (4, 6):
        staged = tmp_path / f"staged{step}"
        staged.mkdir()
        rep.report({"step": step, "best_step": 2}, str(staged))
    assert earlier.is_dir() and rep.best_checkpoint == earlier
    assert not (tmp_path / "checkpoints" / "checkpoint_00000004").exists()


def test_a_checkpoint_of_other_parameter_groups_is_a_clear_refusal(tiny_bert, tiny_data, tmp_path):
    """Weight decay now keeps biases apart: a checkpoint from before (one group) cannot load into
    two groups. ZeRO's own error was a traceback about alignment layouts."""
    from peft_ray.errors import CheckpointError

    train = {"max_steps": 4, "checkpoint_every": 2, "eval_every": 4}
    run_local(_spec(tiny_bert, tiny_data, tmp_path / "run", train=train))
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "checkpoint_00000004")
    # the same job, as an older version recorded it, whose checkpoint holds one group
    job = tmp_path / "run" / "job.yaml"
    job.write_text(job.read_text().replace("weight_decay: 0.0", "weight_decay: 0.01"))
    other = _spec(tiny_bert, tiny_data, tmp_path / "run", train={**train, "weight_decay": 0.01})
    with pytest.raises(CheckpointError, match="does not fit this run's parameter groups"):
        run_local(other, resume=True)


def test_an_earlier_best_that_fails_its_check_is_said_once(tmp_path, capsys):
    """A review finding: a refused earlier best left adapter/ the last step's without a word."""
    import json

    from peft_ray.train.report import LocalReporter

    rep = LocalReporter(str(tmp_path), keep=1, resume_from=None)
    earlier = tmp_path / "checkpoints" / "checkpoint_00000002"
    earlier.mkdir(parents=True)
    (earlier / "trainer_state.json").write_text(json.dumps({"global_step": 2}))   # no manifest: refused
    for step in (4, 6):
        staged = tmp_path / f"staged{step}"
        staged.mkdir()
        rep.report({"step": step, "best_step": 2}, str(staged))
    assert rep.best_checkpoint is None
    said = capsys.readouterr().out
    assert said.count("the best checkpoint checkpoint_00000002 (step 2) fails its check") == 1
    assert "adapter/ will hold the last checkpoint's adapter instead" in said


def test_metrics_say_which_steps_adapter_adapter_holds(tmp_path):
    """Left undone before: after a refused earlier best, metrics.json named the best step while
    adapter/ held the last one. `adapter_step` says which it is, and `best` says why they differ."""
    import json
    from types import SimpleNamespace

    from peft_ray.adapter import ADAPTER_FILES
    from peft_ray.storage import Location
    from peft_ray.summary import render_summary
    from peft_ray.tasks import get_task
    from peft_ray.train.outputs import write_outputs

    ckpt = tmp_path / "checkpoint_00000006"
    (ckpt / "adapter").mkdir(parents=True)
    for name in ADAPTER_FILES:
        (ckpt / "adapter" / name).write_text("{}")
    (ckpt / "adapter" / "peft_ray.json").write_text(json.dumps({"metrics": {"accuracy": 0.75, "loss": 0.5, "step": 2}}))
    pre = SimpleNamespace(train=SimpleNamespace(skipped=0), validation=None)
    metrics = {"step": 6, "best_step": 2, "metric_for_best": "accuracy", "best_metric": 0.75,
               "accuracy": 0.6, "macro_f1": 0.55, "loss": 0.9}
    out = Location.at(tmp_path / "run")
    refused = write_outputs(out, Location.at(ckpt), metrics, 1.0, pre, best=None)
    assert refused["adapter_step"] == 6
    assert refused["best"] == "step 2 (accuracy 0.7500); adapter/ holds step 6: that checkpoint was not usable"
    kept = write_outputs(out, Location.at(ckpt), metrics, 1.0, pre, best=Location.at(ckpt))
    assert kept["adapter_step"] == 2 and kept["best"] == "step 2 (accuracy 0.7500)"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["adapter_step"] == 2
    # The summary showed the last evaluation's accuracy beside the best step's adapter (an ML
    # review): its validation rows are now adapter/'s own evaluation, and the last one is named.
    assert kept["adapter_metrics"] == {"accuracy": 0.75, "loss": 0.5, "step": 2} and "adapter_metrics" not in refused
    rows = get_task("classification").summary_rows
    table = " ".join(render_summary(kept, "t", rows).split())     # one space between label and value
    assert "val accuracy 0.7500" in table and "val loss 0.5000" in table
    assert "val figures adapter/'s, step 2 last evaluation step 6: accuracy 0.6000, macro_f1 0.5500" in table
    assert "val accuracy 0.6000" in " ".join(render_summary(refused, "t", rows).split())
    plain = write_outputs(out, Location.at(ckpt), {"step": 6}, 1.0, pre)
    assert plain["adapter_step"] == 6 and "best" not in plain


def test_training_says_how_many_validation_rows_were_cut(tiny_bert, tiny_data, tmp_path, capsys):
    """An ML review finding: `eval` and `predict` warn about rows cut at model.max_length, whose
    answers count as wrong, but training's own evaluation said nothing (its "truncated rows" are
    the training rows). The first evaluation counts them, says so once, and the summary shows it."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from peft_ray.summary import render_summary

    m = run_local(_spec(tiny_bert, tiny_data, tmp_path / "run", model={"max_length": 12},
                        train={"max_steps": 4, "eval_every": 2}))
    texts = pq.read_table(tiny_data / "validation.parquet")["text"]
    assert 0 < m["val_truncated_rows"] < len(texts)
    assert pc.max(pc.utf8_length(texts)).as_py() > 12
    said = capsys.readouterr()
    assert (said.out + said.err).count(f"warning: {m['val_truncated_rows']} validation row(s) were longer") == 1
    assert "truncated val rows" in render_summary(m)
