"""The Ray Train settings peft-ray gives the Ray it starts in-process (train/ray_start.py)."""

from __future__ import annotations

from peft_ray.train.ray_start import IN_PROCESS_RAY_TRAIN_ENV, ray_train_env_defaults


def test_the_settings_are_ray_trains_own_propagated_variables():
    # Ray Train copies exactly these from the driver to its controller and workers: a renamed
    # variable in a later Ray would silently stop applying.
    from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE

    assert set(IN_PROCESS_RAY_TRAIN_ENV) <= ENV_VARS_TO_PROPAGATE


def test_the_values_parse_as_ray_reads_them(monkeypatch):
    from ray._common.utils import env_bool

    assert float(IN_PROCESS_RAY_TRAIN_ENV["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]) < 2.0   # Ray's default
    watcher = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
    monkeypatch.setenv(watcher, IN_PROCESS_RAY_TRAIN_ENV[watcher])
    assert env_bool(watcher, True) is False


def test_a_value_the_user_set_wins():
    user = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "5", "PATH": "/bin"}
    defaults = ray_train_env_defaults(user)
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in defaults
    assert defaults == {k: v for k, v in IN_PROCESS_RAY_TRAIN_ENV.items() if k not in user}



def test_a_workers_own_job_error_is_what_the_run_raises():
    """A SpecError or DataError only a worker met (a row the pre-flight could not see) ended the
    CLI in Ray's WorkerGroupError traceback; the first rank's own error is raised instead."""
    from ray.train.v2.api.exceptions import WorkerGroupError

    from peft_ray.errors import DataError
    from peft_ray.train.driver import worker_job_error

    bad = DataError("row 3 of a batch: 'tokens' has 2 words but 'ner_tags' has 1 tags")
    error = WorkerGroupError("two workers failed", {1: bad, 0: RuntimeError("gloo: connection closed")})
    assert worker_job_error(error) is bad
    assert worker_job_error(WorkerGroupError("x", {0: RuntimeError("oom")})) is None
    assert worker_job_error(RuntimeError("not a worker group")) is None
