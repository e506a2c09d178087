"""`peft-ray submit` to a fresh 2-CPU head (`ray start --head --num-cpus 2`) with 2 one-CPU workers
used to hang forever (Ray Data's read tasks got no CPU): refused before anything is submitted."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.submit.client import cluster_cpus
from tests.cluster.conftest import LocalCluster
from tests.conftest import job_dict

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def small_head():
    c = LocalCluster()
    try:
        c.start_head(num_cpus=2)
        # submit itself waits 30 s for a fresh head to register; a loaded test machine may need more
        c._wait(lambda: len(c.alive_node_ids()) >= 1, "the head node registered")
        yield c
    finally:
        c.stop()


@pytest.mark.timeout(300)
def test_submit_to_a_head_without_a_cpu_for_data_is_refused(small_head, monkeypatch, tmp_path, tiny_bert, tiny_data):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", small_head.token)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", small_head.address)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_cpus(None) == 2.0
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "two.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out", scaling={"num_workers": 2})))
    r = CliRunner().invoke(main, ["submit", str(job), "--working-dir", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "scaling.num_workers=2 x scaling.cpus_per_worker=1" in r.output and "has 2" in r.output
    assert "submitted" not in r.output
    listed = CliRunner().invoke(main, ["jobs", "list"])
    assert listed.exit_code == 0 and "peft-ray-" not in listed.output      # nothing was submitted
