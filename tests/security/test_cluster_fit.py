"""Workers that leave Ray Data no CPU make a job hang forever: refused before submitting, with
the fields and the cluster's CPUs named (the rule of train/fit.py, as the local driver uses)."""

from __future__ import annotations

import pytest

from peft_ray.errors import JobError
from peft_ray.spec import validate_spec
from peft_ray.submit.job import Submission, check_cluster_cpus
from peft_ray.train.fit import DATA_CPU_SLOTS, cpu_fit_problem
from tests.conftest import job_dict


def test_workers_that_take_every_cpu_do_not_fit():
    msg = cpu_fit_problem(2, 1, 2)          # `ray start --head --num-cpus 2`, jobs/default.yaml
    assert msg.startswith("scaling.num_workers=2 x scaling.cpus_per_worker=1 = 2 CPUs for the training workers")
    assert f"+ {DATA_CPU_SLOTS} for Ray Data" in msg and "has 2" in msg and "hangs" in msg
    assert "hold at most 1 CPUs" in msg


@pytest.mark.parametrize("workers,per,cpus,fits", [
    (2, 1, 3, True), (2, 1, 2, False), (1, 1, 2, True), (2, 1.5, 4, True), (2, 2, 4, False), (4, 0.5, 3, True),
    (1, 1, 1, False)])
def test_the_rule_keeps_data_slots_free(workers, per, cpus, fits):
    assert (cpu_fit_problem(workers, per, cpus) is None) == fits


def test_the_driver_reservation_counts_and_a_tiny_cluster_says_add_cpus():
    assert cpu_fit_problem(2, 1, 3) is None
    msg = cpu_fit_problem(2, 1, 3, reserved=1)
    assert "+ 1 for the job's driver (--entrypoint-num-cpus)" in msg
    assert "add CPUs to the cluster" in cpu_fit_problem(1, 1, 1)


def _sub(tmp_path, **scaling):
    spec = validate_spec(job_dict(tmp_path / "m", tmp_path / "d", tmp_path / "out", scaling=scaling))
    return Submission("peft-ray train x.yaml", "id", {}, {}, spec=spec)


def test_submit_check_refuses_and_names_the_escape(tmp_path):
    with pytest.raises(JobError, match=r"scaling.num_workers=2 .* has 2: .* pass --no-cpu-check"):
        check_cluster_cpus(_sub(tmp_path, num_workers=2), 2.0)
    assert check_cluster_cpus(_sub(tmp_path, num_workers=2), 3.0) is None
    assert "did not report its CPUs" in check_cluster_cpus(_sub(tmp_path, num_workers=2), None)
    assert check_cluster_cpus(_sub(tmp_path, num_workers=2, use_gpu=True), 2.0) is None   # GPU nodes start on demand
