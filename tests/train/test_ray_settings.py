"""The Ray Train settings peft-ray gives the Ray it starts in-process (train/driver.py)."""

from __future__ import annotations

from peft_ray.train.driver import IN_PROCESS_RAY_TRAIN_ENV, ray_train_env_defaults


def test_the_settings_are_ray_trains_own_propagated_variables():
    # Ray Train copies exactly these from the driver to its controller and workers: a renamed
    # variable in a later Ray would silently stop applying.
    from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE

    assert set(IN_PROCESS_RAY_TRAIN_ENV) <= ENV_VARS_TO_PROPAGATE


def test_the_values_parse_as_ray_reads_them():
    from ray._common.utils import env_bool

    assert float(IN_PROCESS_RAY_TRAIN_ENV["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]) < 2.0   # Ray's default
    watcher = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
    import os

    old = os.environ.get(watcher)
    os.environ[watcher] = IN_PROCESS_RAY_TRAIN_ENV[watcher]
    try:
        assert env_bool(watcher, True) is False
    finally:
        os.environ.pop(watcher) if old is None else os.environ.__setitem__(watcher, old)


def test_a_value_the_user_set_wins():
    user = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "5", "PATH": "/bin"}
    defaults = ray_train_env_defaults(user)
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in defaults
    assert defaults == {k: v for k, v in IN_PROCESS_RAY_TRAIN_ENV.items() if k not in user}


def test_rank_share_is_equal_disjoint_and_drops_the_remainder_as_ray_does():
    import pyarrow as pa

    from peft_ray.train.data_iter import READ_BATCH, rank_share

    tables = [pa.table({"i": list(range(k, k + n))}) for k, n in ((0, 300), (300, 7), (307, 400))]  # 707 rows
    parts = [[v for t in rank_share(tables, r, 3) for v in t.column("i").to_pylist()] for r in range(3)]
    assert [len(p) for p in parts] == [235, 235, 235]          # 707 // 3; the last 2 rows dropped
    assert parts[0] + parts[1] + parts[2] == list(range(705))
    assert all(len(t) <= READ_BATCH for r in range(3) for t in rank_share(tables, r, 3))
    assert rank_share(tables, 0, 1) == tables
