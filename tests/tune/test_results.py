"""The leaderboard from what trials left on disk, without Ray: a resumed trial's every attempt
counts, failed trials show their error and are never the best, a search where all failed exits 1,
and ASHA's rungs are rebuilt from the trials' histories on --resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from peft_ray.spec import validate_spec
from peft_ray.tune import results
from peft_ray.tune.history import ERROR_FILE, HISTORY_FILE, ResumableASHA
from peft_ray.tune.space import SearchSpace
from tests.tune.conftest import tune_job

NAN_ERROR = ("peft_ray.train.recipe.NonFiniteLoss: loss is nan at step 3 (epoch 0, micro-batch 2). Lower "
             "train.lr, check the data, or set train.nan_policy: skip to skip such batches")


def _reports(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for step, loss in rows:
            f.write(json.dumps({"step": step, "loss": loss, "checkpoint_path": f"/gone/checkpoint_{step:08d}"}) + "\n")


class Search:
    """A search folder as Tune and the trials leave it: tune/<id>/result.json (Tune's: the last
    attempt), trials/<id>/history.jsonl and error.txt (the driver's), the trials' statuses."""

    def __init__(self, tiny_bert, tiny_data, tmp_path, lrs):
        self.out = tmp_path / "search"
        tune = {"space": {"train.lr": {"grid": lrs}}, "scheduler": {"name": "fifo"}, "metric": "loss"}
        self.spec = validate_spec(tune_job(tiny_bert, tiny_data, self.out, tune, train={"max_steps": 3}))
        self.space = SearchSpace.from_spec(self.spec)
        self.drawn = [{"train.lr": lr} for lr in lrs]
        self.trials = []

    def trial(self, n: int, status: str, tune_reports, own_reports=(), error=None):
        tid = f"abc_{n:05d}"
        tune_dir, own = self.out / "tune" / tid, self.out / "trials" / tid
        tune_dir.mkdir(parents=True, exist_ok=True)
        _reports(tune_dir / "result.json", tune_reports)
        if own_reports:
            _reports(own / HISTORY_FILE, own_reports)
        if error:
            own.mkdir(parents=True, exist_ok=True)
            (own / ERROR_FILE).write_text(f"Failure # 1 (occurred at 2026-01-01)\nTraceback ...\n{error}\n")
        self.trials.append(SimpleNamespace(trial_id=tid, config={"candidate": n}, status=status, path=str(tune_dir)))
        return tid

    def write(self, monkeypatch):
        monkeypatch.setattr(results, "tune_trials", lambda experiment: self.trials)
        return results.write_results(self.out / "tune", self.spec, self.space, self.drawn, lambda a: 3, self.out,
                                     "job.yaml", 1.0)

    def csv(self):
        with open(self.out / "leaderboard.csv") as f:
            return list(csv.DictReader(f))


def test_a_resumed_trials_earlier_reports_count(tiny_bert, tiny_data, tmp_path, monkeypatch):
    """Tune's result.json of a resumed trial holds only the new attempt (step 3); its best report
    (step 1) is in its own history, and wins: leaderboard, best_job.yaml, curve."""
    s = Search(tiny_bert, tiny_data, tmp_path, [0.1, 0.2])
    resumed = s.trial(0, "TERMINATED", [(3, 0.70)], own_reports=[(1, 0.60), (2, 0.65), (3, 0.71), (3, 0.70)])
    s.trial(1, "TERMINATED", [(1, 0.66), (2, 0.64), (3, 0.63)], own_reports=[(1, 0.66), (2, 0.64), (3, 0.63)])
    rows = s.write(monkeypatch)
    best = rows[0]
    assert (best.trial_id, best.best_metric, best.best_step) == (resumed, 0.60, 1)
    assert best.curve == [[1, 0.60], [2, 0.65], [3, 0.70]]   # step 3 once, its last report
    assert s.csv()[0]["best_step"] == "1"
    assert "loss 0.6 at step 1" in (s.out / "best_job.yaml").read_text()      # 4 digits at most, named


def test_a_search_started_before_histories_reads_tunes_result(tiny_bert, tiny_data, tmp_path, monkeypatch):
    s = Search(tiny_bert, tiny_data, tmp_path, [0.1])
    s.trial(0, "TERMINATED", [(1, 0.66), (2, 0.64)])
    assert [r.best_step for r in s.write(monkeypatch)] == [2]


def test_failed_trials_show_their_error_and_are_never_the_best(tiny_bert, tiny_data, tmp_path, monkeypatch, capsys):
    """The failed trial's evaluations were better, but its job fails again if re-run: the best is
    the trial that finished; the failure's last line is in the CSV, the JSON and under the table."""
    s = Search(tiny_bert, tiny_data, tmp_path, [0.1, 0.2])
    failed = s.trial(0, "ERROR", [(1, 0.50), (2, 0.40)], own_reports=[(1, 0.50), (2, 0.40)], error=NAN_ERROR)
    ok = s.trial(1, "TERMINATED", [(1, 0.66), (2, 0.64), (3, 0.63)])
    rows = s.write(monkeypatch)
    assert [(r.trial_id, r.status) for r in rows] == [(ok, "ok"), (failed, "error")]
    by_id = {c["trial_id"]: c for c in s.csv()}
    assert by_id[failed]["error"] == NAN_ERROR and by_id[ok]["error"] == ""
    board = {t["trial_id"]: t for t in json.loads((s.out / "leaderboard.json").read_text())["trials"]}
    assert board[failed]["error"] == NAN_ERROR and board[failed]["status"] == "error"
    said = capsys.readouterr().out
    assert f"{failed}: {NAN_ERROR}" in said and "1 of 2 trial(s) failed" in said
    assert f"best: {ok} " in said and f"The best trial ({ok})" in (s.out / "best_job.yaml").read_text()


def test_a_search_where_every_trial_failed_exits_1(tiny_bert, tiny_data, tmp_path, monkeypatch):
    s = Search(tiny_bert, tiny_data, tmp_path, [0.1, 0.2])
    first = s.trial(0, "ERROR", [(1, 0.70), (2, 0.69)], own_reports=[(1, 0.70), (2, 0.69)], error=NAN_ERROR)
    s.trial(1, "ERROR", [(1, 0.60)], error="RuntimeError: something else")
    with pytest.raises(results.TrialsFailed) as e:
        s.write(monkeypatch)
    assert e.value.exit_code == 1
    msg = str(e.value)
    assert "all 2 trial(s) failed" in msg and f"trial {first}: {NAN_ERROR}" in msg and "--overwrite" in msg
    assert [c["status"] for c in s.csv()] == ["error", "error"]    # the leaderboard is still written
    assert not (s.out / "best_job.yaml").exists() and not (s.out / "adapter").exists()


def test_asha_rebuilds_its_rungs_from_the_histories_on_resume(tmp_path):
    """Tune saves no scheduler state: on --resume each trial it adds gets its earlier reports
    replayed into ASHA's rungs, so a resumed trial is judged against the trials that ran before."""
    def history(tid, rows):
        _reports(tmp_path / "trials" / tid / HISTORY_FILE, rows)
        return SimpleNamespace(trial_id=tid)

    asha = ResumableASHA(str(tmp_path), time_attr="step", max_t=40, grace_period=10, reduction_factor=2,
                         stop_last_trials=False)
    asha.set_search_properties("loss", "min")
    done = [history("t0", [(10, 0.5), (20, 0.4), (40, 0.3)]), history("t1", [(10, 0.6), (20, 0.45), (40, 0.35)])]
    resumed = history("t2", [(10, 0.55)])
    for t in done + [resumed]:
        asha.on_trial_add(None, t)
    rungs = {milestone: dict(rec) for milestone, rec in asha._brackets[0]._rungs}
    assert rungs[10] == {"t0": -0.5, "t1": -0.6, "t2": -0.55} and rungs[20] == {"t0": -0.4, "t1": -0.45}
    # the resumed trial's step-20 loss is worse than both finished trials': ASHA stops it
    assert asha.on_trial_result(None, resumed, {"step": 20, "loss": 0.9}) == "STOP"
    fresh = ResumableASHA(str(tmp_path / "new"), time_attr="step", max_t=40, grace_period=10, reduction_factor=2,
                          stop_last_trials=False)
    fresh.set_search_properties("loss", "min")
    fresh.on_trial_add(None, SimpleNamespace(trial_id="t9"))     # a new search: nothing to replay
    assert all(not rec for _, rec in fresh._brackets[0]._rungs)


def test_planted_files_in_a_trial_folder_are_data_never_followed(tmp_path, capsys):
    """A second diff-review finding: a FIFO at history.jsonl hung the search's driver, a link in
    place of a trial folder had the history written outside the search, a history line with a
    non-integer step broke the leaderboard, and a planted error.txt link showed its target's line."""
    import os

    from peft_ray.tune.history import TrialRecorder, read_error, read_history

    out = tmp_path / "search"
    rec = TrialRecorder(str(out))
    fifo_trial, link_trial = SimpleNamespace(trial_id="t0"), SimpleNamespace(trial_id="t1")
    (out / "trials" / "t0").mkdir(parents=True)
    os.mkfifo(out / "trials" / "t0" / HISTORY_FILE)
    victim = tmp_path / "victim"
    victim.mkdir()
    (out / "trials" / "t1").symlink_to(victim)
    for _ in range(2):
        rec.on_trial_result(0, [], fifo_trial, {"step": 1, "loss": 0.5})      # returns: no reader blocks it
        rec.on_trial_result(0, [], link_trial, {"step": 1, "loss": 0.5})
    assert list(victim.iterdir()) == []
    said = capsys.readouterr().out
    assert said.count("trial t0:") == 1 and said.count("trial t1:") == 1, said

    own = tmp_path / "own"
    own.mkdir()
    (own / HISTORY_FILE).write_text('{"step": "x", "loss": 1}\n{"step": 2, "loss": 0.3}\n{"step": true}\n')
    assert [r["step"] for r in read_history(None, own)] == [2]
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-LINE\n")
    (own / ERROR_FILE).symlink_to(secret)
    assert read_error(own) is None


def test_a_report_the_driver_never_took_is_read_from_the_trials_checkpoint(tiny_bert, tiny_data, tmp_path):
    """Seen on a real interrupted search: the trial reported its best (step 30) just before the
    Ctrl-C, the driver never took it, so history.jsonl lacked it; the leaderboard named step 20 and
    found that checkpoint pruned. Every report is also in the trial's own checkpoints
    (trainer_state.json's history), each with its checkpoint where retention kept it."""
    from peft_ray.train.local import run_local
    from peft_ray.tune.history import read_history
    from tests.conftest import job_dict

    own = tmp_path / "trial"
    run_local(validate_spec(job_dict(tiny_bert, tiny_data, own, scaling={"num_workers": 1}, train={
        "max_steps": 3, "eval_every": 1, "checkpoint_every": 1, "keep_checkpoints": 1})), bar="none")
    _reports(own / HISTORY_FILE, [(1, 0.9)])                   # what the driver took before the interruption
    rows = read_history(None, own)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["loss"] == 0.9   # the driver's row wins its step
    kept = {r["step"]: r["checkpoint_path"] for r in rows[1:]}
    assert kept[3] == str(own / "checkpoints" / "checkpoint_00000003") and Path(kept[3]).is_dir()


def test_a_planted_report_can_neither_export_an_adapter_from_elsewhere_nor_pass_the_last_step(
        tiny_bert, tiny_data, tmp_path, monkeypatch):
    """A security-review finding: a row appended to a trial's history.jsonl named a checkpoint
    outside the search (another user's adapter, copied into the search's adapter/) under a score
    at step 3 of 2. A row's checkpoint counts only inside the trial's own folders, and a report
    past the trial's last step was never made."""
    from peft_ray.tune.history import read_history

    s = Search(tiny_bert, tiny_data, tmp_path, [1e-3])
    tid = s.trial(0, "TERMINATED", [(1, 0.8), (3, 0.7)])
    victim = tmp_path / "victim" / "checkpoint_00000002"
    (victim / "adapter").mkdir(parents=True)
    own = s.out / "trials" / tid
    inside = own / "checkpoint_00000002"
    inside.mkdir(parents=True)
    with open(own / HISTORY_FILE, "a") as f:
        f.write(json.dumps({"step": 2, "loss": 0.1, "checkpoint_path": str(victim)}) + "\n")
    assert read_history(s.out / "tune" / tid, own)[1]["checkpoint_path"] is None
    (own / HISTORY_FILE).write_text(json.dumps({"step": 2, "loss": 0.1, "checkpoint_path": str(inside)}) + "\n")
    assert read_history(s.out / "tune" / tid, own)[1]["checkpoint_path"] == str(inside)
    with open(own / HISTORY_FILE, "w") as f:
        f.write(json.dumps({"step": 2, "loss": 0.01, "checkpoint_path": str(victim)}) + "\n")
        f.write(json.dumps({"step": 4, "loss": 0.001, "checkpoint_path": str(inside)}) + "\n")   # of 3
    s.write(monkeypatch)
    row = s.csv()[0]
    assert (row["best_loss"], row["best_step"], row["steps_trained"]) == ("0.01", "2", "3")
    assert not (s.out / "adapter").exists()      # the step's checkpoint is not the trial's: nothing exported


def test_the_printed_leaderboard_gives_each_searched_field_its_own_column():
    """One params cell cut at 30 characters hid the value that told trials apart ('train.lr=0.03,
    method.num_vir…'; a review finding); a verbalizer all trials share is no column either."""
    def row(rank, params):
        return results.TrialRow(rank=rank, trial_id=f"t_{rank}", template="{soft} Review: {text} It was {label}.",
                                verbalizer={"negative": ["bad"], "positive": ["good"]}, params=params,
                                best_metric=0.5, best_step=2, steps_trained=2, total_steps=2, stopped_early=False,
                                status="done", checkpoint=None, curve=[], error=None)
    table = results.render_table([row(1, {"train.lr": 0.03, "method.name": "lora", "method.r": 8}),
                                  row(2, {"train.lr": 0.1, "method.name": "prompt_tuning"})], "accuracy")
    head, _, first, second = table.splitlines()
    assert head.split() == ["rank", "trial", "template", "lr", "method", "r", "best", "accuracy", "@step", "steps",
                            "early"]
    assert first.split()[-7:] == ["0.03", "lora", "8", "0.5000", "2", "2/2", "no"]
    assert "0.1" in second.split() and "prompt_tuning" in second.split() and "verbalizer" not in table


def test_an_interrupted_search_counts_the_trials_that_never_started(tiny_bert, tiny_data, tmp_path, monkeypatch):
    """Ctrl-C's leaderboard listed the started trials only and said nothing of the rest (a review finding)."""
    s = Search(tiny_bert, tiny_data, tmp_path, [0.1, 0.2, 0.3, 0.4])
    s.trial(0, "TERMINATED", [(1, 0.66), (2, 0.64), (3, 0.63)])
    s.trial(1, "RUNNING", [(1, 0.70)])
    with pytest.raises(results.TuneInterrupted, match=r"with 1 trial\(s\) unfinished and 2 not started .* --resume"):
        s.write(monkeypatch)
