"""A task (or method) from an installed package, found through its entry point: the CLI runs a
job that names it, a broken one is refused where a job names it (every other job unaffected),
and one that takes a built-in's name is left out. The package here is real as far as Python's
importlib.metadata goes: a dist-info folder with entry_points.txt on the subprocess's path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from peft_ray.registry import Registry
from tests.conftest import job_dict, write_rows
from tests.tasks.test_toy_task import _rows

REPO = Path(__file__).resolve().parents[2]


def _install(site: Path, entries: str, module: str = "") -> Path:
    """A package 'toyplug' installed into `site`: its module text and its entry points."""
    (site / "toyplug").mkdir(parents=True)
    (site / "toyplug" / "__init__.py").write_text(module)
    info = site / "toyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entries)
    return site


def _cli(site: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "peft_ray.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


TOY = "from tests.tasks.toy_regression import Regression\nTASK = Regression()\n"


def test_an_installed_task_runs_from_the_cli(tiny_bert, tmp_path):
    site = _install(tmp_path / "site", "[peft_ray.tasks]\nregression = toyplug:TASK\n", TOY)
    write_rows(tmp_path / "data" / "train.parquet", _rows(64, 1))
    write_rows(tmp_path / "data" / "validation.parquet", _rows(20, 2))
    job = job_dict(tiny_bert, tmp_path / "data", tmp_path / "out", template={"text": "{soft} {text}", "verbalizer": None},
                   scaling={"num_workers": 1}, train={"max_steps": 2, "eval_every": 2, "batch_size": 8})
    job["task"] = {"type": "regression", "target_column": "score"}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    run = _cli(site, "train", "job.yaml", "--local", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "mse" in json.loads((tmp_path / "out" / "metrics.json").read_text())
    without = _cli(tmp_path / "empty", "validate", "job.yaml", cwd=tmp_path)    # the package not installed
    assert without.returncode != 0 and "task.type: unknown task 'regression'" in without.stdout + without.stderr


def test_a_broken_plugin_is_refused_where_named_and_said_elsewhere(tmp_path):
    site = _install(tmp_path / "site", "[peft_ray.tasks]\nbroken = toyplug:TASK\n", "raise ImportError('no torch_foo')\n")
    code = ("from peft_ray.tasks import TASKS\n"
            "assert 'classification' in TASKS\n"
            "try:\n    TASKS.get('broken')\nexcept Exception as e:\n    print('REFUSED', e)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert ("REFUSED task.type: task 'broken' comes from an installed package that failed to load: entry point "
            "'broken = toyplug:TASK' (group peft_ray.tasks): ImportError: no torch_foo") in run.stdout
    assert "[peft-ray] warning: entry point 'broken = toyplug:TASK'" in run.stderr


class _Named:
    def __init__(self, name):
        self.name = name


def test_a_plugin_cannot_replace_a_builtin_or_come_under_another_name(tmp_path, monkeypatch, capsys):
    from importlib.metadata import EntryPoint

    reg: Registry = Registry("task", "task.type", group="peft_ray.tests")
    builtin = reg.register("classification")(_Named("classification"))
    points = [EntryPoint("classification", "tests.tasks.test_installed_plugins:_Named", "peft_ray.tests"),
              EntryPoint("mine", "tests.tasks.test_installed_plugins:_MISNAMED", "peft_ray.tests"),
              EntryPoint("good", "tests.tasks.test_installed_plugins:_GOOD", "peft_ray.tests")]
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [p for p in points if p.group == group])
    assert reg.get("classification") is builtin and reg.get("good") is _GOOD
    with pytest.raises(Exception, match="gives a _Named named 'other', not a task named 'mine'"):
        reg.get("mine")
    assert "'classification' is already a task here; left out" in capsys.readouterr().err


_MISNAMED = _Named("other")
_GOOD = _Named("good")


def test_a_plugin_that_registers_itself_is_not_said_to_be_left_out(monkeypatch, capsys):
    from importlib.metadata import EntryPoint

    reg: Registry = Registry("task", "task.type", group="peft_ray.tests")
    reg.register("good")(_GOOD)          # as the plugin's own import would, before the first lookup
    point = EntryPoint("good", "tests.tasks.test_installed_plugins:_GOOD", "peft_ray.tests")
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [point])
    assert reg.get("good") is _GOOD and "left out" not in capsys.readouterr().err


def test_a_broken_plugin_is_said_by_the_driver_not_again_by_each_ray_worker(tmp_path):
    site = _install(tmp_path / "site", "[peft_ray.tasks]\nbroken = toyplug:TASK\n", "raise ImportError('no torch_foo')\n")
    code = ("import ray\n"
            "from peft_ray.tasks import TASKS\n"
            "ray.init(num_cpus=2, include_dashboard=False)\n"
            "assert 'classification' in TASKS\n"
            "@ray.remote(num_cpus=0)\n"
            "class Worker:\n"
            "    def names(self):\n"
            "        from peft_ray.tasks import TASKS\n"
            "        return TASKS.names()\n"
            "workers = [Worker.remote() for _ in range(2)]\n"
            "print('NAMES', ray.get([w.names.remote() for w in workers]))\n"
            "ray.shutdown()\n")
    with tempfile.TemporaryDirectory(dir="/tmp") as ray_tmp:     # a short path: Ray's sockets live there
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "RAY_TMPDIR": ray_tmp}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "NAMES [['classification'" in run.stdout    # both workers looked their registry up
    assert (run.stdout + run.stderr).count("entry point 'broken = toyplug:TASK'") == 1, run.stdout + run.stderr
