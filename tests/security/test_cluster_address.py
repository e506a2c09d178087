"""A job file never picks the Ray cluster a job joins: joining sends the data, model and adapter
there, and Ray's protocols unpickle what the cluster sends back. Only the command line may."""

from __future__ import annotations

import select
import socket

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import SpecError
from peft_ray.spec import load_spec, validate_spec
from tests.conftest import job_dict


@pytest.fixture
def head():
    """A listening socket standing for a hostile Ray head: the test checks nobody connected."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def _connected(server: socket.socket) -> bool:
    return bool(select.select([server], [], [], 0)[0])


def _job_file(tmp_path, tiny_bert, tiny_data, address: str):
    job = tmp_path / "shared-job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out", scaling={"address": address})))
    return job


@pytest.mark.parametrize("command", ["train", "tune", "validate", "submit"])
def test_a_job_file_never_picks_the_cluster(tiny_bert, tiny_data, tmp_path, head, command, monkeypatch):
    from peft_ray.train import ray_start

    joined = []    # a real join would wait on the silent head: the test records it and fails instead
    monkeypatch.setattr(ray_start, "join_cluster", lambda address, source: joined.append(address) or 1 / 0)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = "%s:%d" % head.getsockname()
    job = _job_file(tmp_path, tiny_bert, tiny_data, address)
    args = {"submit": ["submit", str(job), "--dry-run", "--working-dir", str(tmp_path)]}.get(command, [command, str(job)])
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert f"scaling.address: '{address}'" in result.output and f"scaling.address={address}" in result.output
    assert not joined and not _connected(head)


@pytest.mark.parametrize("address", ["ray://evil.example:10001", "10.0.0.1:6379", "localhost:6379",
                                     "http://user:hunter2@evil.example:8265"])
def test_every_host_is_refused_from_a_file_and_credentials_stay_out_of_the_message(tiny_bert, tiny_data, tmp_path,
                                                                                   address):
    with pytest.raises(SpecError, match="a job file never picks a cluster") as e:
        load_spec(_job_file(tmp_path, tiny_bert, tiny_data, address))
    assert "hunter2" not in str(e.value)


def test_the_command_line_picks_it(tiny_bert, tiny_data, tmp_path):
    job = _job_file(tmp_path, tiny_bert, tiny_data, "10.0.0.1:6379")
    assert load_spec(job, ["scaling.address=10.0.0.2:6379"]).scaling.address == "10.0.0.2:6379"
    assert load_spec(job, ["scaling={address: '10.0.0.1:6379'}"]).scaling.address == "10.0.0.1:6379"
    assert load_spec(job, ["scaling.address=null"]).scaling.address is None   # then $RAY_ADDRESS, if set
    with pytest.raises(SpecError, match="a job file never picks a cluster"):
        load_spec(job, ["scaling.num_workers=1"])


@pytest.mark.parametrize("address", ["auto", "local"])
def test_a_file_may_join_a_ray_on_this_machine(tiny_bert, tiny_data, tmp_path, address):
    assert load_spec(_job_file(tmp_path, tiny_bert, tiny_data, address)).scaling.address == address


def test_a_search_cannot_pick_the_cluster(tiny_bert, tiny_data, tmp_path):
    from peft_ray.tune.space import SearchSpace, check_keys

    spec = job_dict(tiny_bert, tiny_data, tmp_path / "out",
                    tune={"space": {"scaling.address": {"choice": ["auto", "10.0.0.1:6379"]}}})
    with pytest.raises(SpecError, match="tune.space.scaling.address: cannot be searched"):
        check_keys(SearchSpace.from_spec(validate_spec(spec)))


def test_best_job_yaml_carries_a_typed_cluster_in_its_command_not_in_the_file():
    """A review finding: best_job.yaml of a search on a typed address was refused by its own header's command."""
    from peft_ray.tune.results import cluster_override

    saved = {"scaling": {"address": "10.1.2.3:6379", "num_workers": 2}}
    assert cluster_override(saved) == " scaling.address=10.1.2.3:6379"
    assert saved == {"scaling": {"num_workers": 2}}
    here = {"scaling": {"address": "auto"}}
    assert cluster_override(here) == "" and here == {"scaling": {"address": "auto"}}
    assert cluster_override({"scaling": {"num_workers": 1}}) == ""
