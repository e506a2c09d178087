"""tune --resume unpickles Ray Tune's state: only from files nobody else can write."""

from __future__ import annotations

import pytest

from peft_ray.errors import CheckpointError
from peft_ray.security import check_own_pickles


def test_own_private_state_is_accepted(tmp_path):
    (tmp_path / "experiment_state.pkl").write_bytes(b"x")
    (tmp_path / "experiment_state.pkl").chmod(0o644)
    check_own_pickles(tmp_path, "--resume")


def test_state_writable_by_others_is_refused(tmp_path):
    f = tmp_path / "trial" / "state.pkl"
    f.parent.mkdir()
    f.write_bytes(b"x")
    f.chmod(0o666)
    with pytest.raises(CheckpointError, match="refusing to resume .*writable by others.*pickled"):
        check_own_pickles(tmp_path, "--resume")
