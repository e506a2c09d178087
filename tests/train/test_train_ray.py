"""2-worker training on a real Ray runtime with real DeepSpeed engines (gloo, CPU).

Runs are shared through module-scoped fixtures: each Ray Train run costs ~1 minute
of worker start-up on 2 cores, so every run here is asserted on more than once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from peft_ray.spec import validate_spec
from peft_ray.train.driver import run_train
from tests.conftest import job_dict

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RESUME = dict(train={"max_steps": 6, "checkpoint_every": 3, "eval_every": 6, "max_failures": 0})


def _train(tiny_bert, tiny_data, out: Path, **sections):
    spec = validate_spec(job_dict(tiny_bert, tiny_data, out, **sections))
    return spec, run_train(spec)


@pytest.fixture(scope="module")
def stage_runs(ray_runtime, tiny_bert, tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("zero")
    return {s: (root / f"z{s}", _train(tiny_bert, tiny_data, root / f"z{s}", deepspeed={"zero_stage": s})[1])
            for s in (1, 2, 3)}


@pytest.fixture(scope="module")
def uninterrupted(ray_runtime, tiny_bert, tiny_data, tmp_path_factory):
    return _train(tiny_bert, tiny_data, tmp_path_factory.mktemp("full"), **RESUME)[1]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_two_workers_each_zero_stage(stage_runs, stage):
    out, metrics = stage_runs[stage]
    assert metrics["step"] == 4
    assert metrics["n_eval"] == 70  # every validation row, exactly once, across 2 workers
    for key in ("accuracy", "macro_f1", "loss", "samples_per_s", "tokens_per_s"):
        assert key in metrics
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    state = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    # Full, gathered values even under ZeRO-3 (where each rank holds a partition).
    assert state["prompt_embeddings"].shape == (4, 32)
    assert state["base_model.classifier.weight"].shape == (2, 32)
    assert all(v.abs().sum() > 0 for v in state.values())
    assert (out / "job.yaml").exists()


def test_zero3_adapter_matches_zero1_and_zero2(stage_runs):
    """Same seed, same data: the gathered ZeRO-3 adapter equals the ZeRO-1/2 ones."""
    states = {s: load_file(str(stage_runs[s][0] / "adapter_last" / "adapter_model.safetensors")) for s in (1, 2, 3)}
    for k in states[2]:
        torch.testing.assert_close(states[1][k], states[2][k], atol=1e-5, rtol=1e-4)
        # ZeRO-3 reduce-scatters gradients in its own bucket order, so fp32 sums differ
        # in the last bits and Adam's m/sqrt(v) can scale that up on near-zero-gradient
        # elements (seen: 4.3e-5 on 1 of 128). A real partition/gather bug is O(value).
        torch.testing.assert_close(states[3][k], states[2][k], atol=2e-4, rtol=1e-3)
        assert not torch.equal(states[3][k], torch.zeros_like(states[3][k]))


def test_resume_matches_uninterrupted(uninterrupted, tiny_bert, tiny_data, tmp_path, monkeypatch):
    """Kill a worker after step 3's checkpoint with no retries, then --resume: same result."""
    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "cut", **RESUME))
    monkeypatch.setenv("PEFT_RAY_FAIL_AT_STEP", "4")
    with pytest.raises(Exception):
        run_train(spec)
    monkeypatch.delenv("PEFT_RAY_FAIL_AT_STEP")
    assert len([d for d in (tmp_path / "cut" / "ray").iterdir() if d.is_dir()]) == 1
    resumed = run_train(spec, resume=True)
    assert resumed["step"] == 6
    assert resumed["accuracy"] == pytest.approx(uninterrupted["accuracy"], abs=1e-9)
    assert resumed["loss"] == pytest.approx(uninterrupted["loss"], rel=1e-4)
    # the resumed run's folder is new; the interrupted one's (its step-3 checkpoint, not the best:
    # the one evaluation is at step 6) is gone once the outputs are written (train/prune.py)
    runs = [d for d in (tmp_path / "cut" / "ray").iterdir() if d.is_dir()]
    assert len(runs) == 1 and list(runs[0].glob("checkpoint_*"))
    assert (tmp_path / "cut" / "adapter" / "adapter_model.safetensors").exists()


def test_worker_death_restarts_from_checkpoint(uninterrupted, tiny_bert, tiny_data, tmp_path, monkeypatch):
    """A worker process dies (os._exit) at step 4; Ray Train restarts the group from the
    step-3 checkpoint (max_failures=1) and the run ends exactly like an uninterrupted one."""
    monkeypatch.setenv("PEFT_RAY_FAIL_AT_STEP", "4")
    sections = dict(train={**RESUME["train"], "max_failures": 1})
    _, survived = _train(tiny_bert, tiny_data, tmp_path / "killed", **sections)
    assert survived["step"] == 6
    assert survived["accuracy"] == pytest.approx(uninterrupted["accuracy"], abs=1e-9)
    assert survived["loss"] == pytest.approx(uninterrupted["loss"], rel=1e-4)


def test_driver_tokenized_split_equals_the_ray_data_pipeline(ray_runtime, tiny_bert, tiny_data, tmp_path):
    """Small splits are tokenized in the driver (train/driver.split_dataset); the rows must be the
    Ray Data map_batches pipeline's, which larger splits still stream through."""
    from peft_ray.preflight import run_preflight
    from peft_ray.train.driver import split_dataset, token_pipeline

    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "o"))
    pre = run_preflight(spec)
    for facts, split in ((pre.train, "train"), (pre.validation, "validation")):
        def key(r):
            return (list(r["input_ids"]), r["label"])
        ours = sorted((key(r) for r in split_dataset(spec, pre, facts, split).take_all()))
        theirs = sorted((key(r) for r in token_pipeline(spec, pre.model_path, facts.files, split).take_all()))
        assert ours == theirs and len(ours) == facts.rows


def test_large_splits_stream_through_ray_data(ray_runtime, tiny_bert, tiny_data, tmp_path, monkeypatch):
    """The streaming path (splits over IN_DRIVER_ROWS) still trains and scores every row once."""
    import peft_ray.train.driver as driver

    monkeypatch.setattr(driver, "IN_DRIVER_ROWS", 0)
    _, metrics = _train(tiny_bert, tiny_data, tmp_path / "stream")
    assert metrics["step"] == 4 and metrics["n_eval"] == 70


@pytest.mark.parametrize("in_driver", [True, False])
def test_every_epoch_reads_the_same_shard(ray_runtime, tiny_bert, tiny_data, tmp_path, monkeypatch, in_driver):
    """Ray-mode workers replay epoch 1's tables in later epochs (train/data_iter.py) instead of
    running the pipeline again. That is exact only if each worker's shard is the same rows in
    the same order every epoch: read two epochs of a 2-way split as Ray Train reads them."""
    import threading

    import ray.data

    import peft_ray.train.driver as driver
    from peft_ray.preflight import run_preflight
    from peft_ray.train.data_iter import rank_share

    if not in_driver:
        monkeypatch.setattr(driver, "IN_DRIVER_ROWS", 0)
        # many blocks, so that an order could differ (a dataset copies the context when it is made)
        monkeypatch.setattr(ray.data.DataContext.get_current(), "target_max_block_size", 2048)
    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "o"))
    ds = driver.build_datasets(spec, run_preflight(spec))["train"]
    ds.context.execution_options.preserve_order = True    # as Ray Train's DataConfig sets make_trainer's options
    # Small splits reach every worker whole and each takes its rank_share; large ones are split by Ray
    splits = [ds, ds] if in_driver else ds.streaming_split(2, equal=True)
    seen = {0: [], 1: []}

    def read(i: int) -> None:
        for _ in range(2):
            tables = list(splits[i].iter_batches(batch_size=64, batch_format="pyarrow"))
            if in_driver:
                tables = rank_share(tables, i, 2)
            seen[i].append([tuple(ids) for t in tables for ids in t.column("input_ids").to_pylist()])
    threads = [threading.Thread(target=read, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        assert len(seen[i][0]) == 128 and seen[i][0] == seen[i][1]
    assert seen[0][0] != seen[1][0]
    if in_driver:   # disjoint parts of one order (the tiny split's ids may repeat, so compare positions)
        whole = [tuple(ids) for t in ds.iter_batches(batch_size=64, batch_format="pyarrow")
                 for ids in t.column("input_ids").to_pylist()]
        assert seen[0][0] + seen[1][0] == whole[:256]



def test_rays_own_processes_ask_their_own_cluster_with_a_second_ray_on_the_machine(ray_runtime):
    """Ray Train's placement-group cleaner asks the state API every second whether its controller
    lives. Auto-detected, that API finds the other Ray on the machine (or refuses: "multiple active
    Ray instances"); a CI run here lost a running job's placement group that way ("A worker
    health check failed"). start_local_ray points Ray's processes at their own dashboard."""
    import os
    import subprocess
    import sys

    other = subprocess.Popen(
        [sys.executable, "-c", "import ray, time; ray.init(address='local', num_cpus=1, include_dashboard=True, "
         "dashboard_host='127.0.0.1', dashboard_port=0, logging_level='ERROR'); print('up', flush=True); "
         "time.sleep(300)"], stdout=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("RAY_")})
    try:
        assert other.stdout.readline().strip() == "up"

        @ray_runtime.remote(num_cpus=0)
        class Probe:
            def state_of(self, actor_id: str) -> str:
                from ray.util.state import get_actor

                return get_actor(actor_id, timeout=10).state      # what the cleaner calls

        probe = Probe.remote()
        assert ray_runtime.get(probe.state_of.remote(probe._actor_id.hex())) == "ALIVE"
    finally:
        other.terminate()
        other.wait(timeout=60)


@pytest.mark.ray
@pytest.mark.slow
def test_a_ray_start_cluster_on_the_machine_is_named_not_joined(tmp_path):
    """`ray start` leaves its address in Ray's temp dir, and a plain ray.init() joins that cluster
    (and refuses num_cpus there): `peft-ray train` after the docs' local-head steps failed with
    Ray's error. The in-process Ray now starts whatever that file says, with a note."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")        # short: Ray's socket paths live under it
    try:
        os.makedirs(os.path.join(tmp, "ray"))
        with open(os.path.join(tmp, "ray", "ray_current_cluster"), "w") as f:
            f.write("127.0.0.1:1\n")                        # a `ray start` cluster's address file
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["RAY_TMPDIR"] = tmp
        code = ("from peft_ray.train.ray_start import note_started_cluster, start_local_ray; import ray; "
                "note_started_cluster(); start_local_ray(1); print('cpus', ray.cluster_resources()['CPU']); "
                "ray.shutdown()")
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "cpus 1.0" in r.stdout
        assert "started with `ray start` runs here (127.0.0.1:1)" in r.stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_earliest_of_tied_evaluations_stays_the_best_and_is_kept(ray_runtime, tiny_bert, tiny_data, tmp_path):
    """A review finding: with equal scores at steps 2, 4 and 6 (common on small validation sets)
    the best is step 2 (the earliest, as HF), but Ray's retention kept the newer checkpoints on the
    tie and pruned it, so adapter/ fell back to the last step's. A tiny lr makes every
    evaluation's accuracy equal."""
    out = tmp_path / "run"
    spec, metrics = _train(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                           train={"max_steps": 6, "eval_every": 2, "checkpoint_every": 2, "keep_checkpoints": 1,
                                  "lr": 1e-12})
    accuracies = [r["accuracy"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                  if r.get("kind") == "eval"]
    assert len(accuracies) == 3 and len(set(accuracies)) == 1
    assert metrics["best_step"] == 2 and metrics["adapter_step"] == 2
    assert metrics["best"] == f"step 2 (accuracy {accuracies[0]:.4f})"
    # A Ctrl-C (or a kill) after the last checkpoint but before the outputs were written left a
    # finished run without them, and --resume refused it: it now writes them from that checkpoint
    # (the best still found under ray/), without starting Ray.
    written = {n: (out / n / "adapter_model.safetensors").read_bytes() for n in ("adapter", "adapter_last")}
    for name in ("adapter", "adapter_last"):
        shutil.rmtree(out / name)
    (out / "metrics.json").unlink()
    again = run_train(spec, resume=True)
    assert {n: (out / n / "adapter_model.safetensors").read_bytes() for n in written} == written
    same = lambda m: {k: v for k, v in m.items() if k not in ("wall_seconds", "time_phases", "save_seconds")}  # noqa: E731
    assert same(again) == same(metrics) == same(json.loads((out / "metrics.json").read_text()))


def test_a_workers_own_job_error_ends_a_ray_run_as_that_error(ray_runtime, tiny_bert, tiny_data, tmp_path,
                                                              monkeypatch):
    """A DataError only a worker meets (a row the pre-flight could not see) ended the CLI in Ray's
    WorkerGroupError traceback. Ray 2.60's fit() raises the run's error itself: the first form of
    this fix looked at result.error, which fit() never returned (a diff review)."""
    from peft_ray.errors import DataError
    from peft_ray.train import driver

    calls = tmp_path / "calls"

    def fails(config):
        with open(calls, "a") as f:
            f.write("x")
        raise DataError("row 3 of a batch: 'tokens' has 2 words but 'ner_tags' has 1 tags")

    monkeypatch.setattr(driver, "train_func", fails)
    # max_failures=2: a JobError is the job's fault, met again by every restart, so none is made
    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "run", scaling={"num_workers": 1},
                                  train={"max_steps": 2, "max_failures": 2}))
    with pytest.raises(DataError, match="row 3 of a batch"):
        run_train(spec)
    assert calls.read_text() == "x"


def test_storage_that_did_not_answer_is_still_retried():
    """A JobError a retry may not meet again (storage not answering) keeps Ray Train's restarts."""
    from peft_ray.errors import DataError, StorageUnreachable
    from peft_ray.train.job_error_stop import first_job_error

    assert first_job_error({0: StorageUnreachable("s3://b: no answer in 20 s"), 1: RuntimeError("x")}) is None
    bad_row = DataError("row 3")
    assert first_job_error({1: bad_row, 0: StorageUnreachable("s3://b")}) is bad_row
