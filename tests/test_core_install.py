"""README command 1 installs peft-ray's core dependencies only, never an extra: the main job must
run without anything that only the extras (test, kernels, smollm2, optuna) bring. This suite runs
with every extra installed, so these tests hide the extras-only packages in a fresh interpreter
(`sys.modules[name] = None`: import fails and `importlib.util.find_spec` answers None, as when the
package is absent) and run the real command there. accelerate once came with the test extra only,
and the first README command failed on a fresh machine with a misleading config.json error."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMPORT_NAMES = {"pytest-timeout": "pytest_timeout"}


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def extras_only_modules() -> list[str]:
    """Import names of the packages the extras add and the core dependencies do not list."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_dist_name(r) for r in project["dependencies"]}
    extra = {_dist_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    return sorted(IMPORT_NAMES.get(d, d.replace("-", "_")) for d in extra - core)


def run_hidden(args: list[str], tmp_path: pathlib.Path, hidden: list[str]) -> subprocess.CompletedProcess:
    code = ("import sys\n"
            f"for name in {hidden!r}:\n"
            "    sys.modules[name] = None\n"
            "from peft_ray.cli import main\n"
            f"sys.argv = ['peft-ray', *{args!r}]\n"
            "main()\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PEFT_RAY_CACHE": str(tmp_path / "cache")})


def test_the_extras_only_packages_are_known():
    hidden = extras_only_modules()
    assert {"peft", "gguf", "triton", "pytest"} <= set(hidden)
    assert "accelerate" not in hidden   # a core dependency: the pre-flight weight check needs it


def test_the_main_job_runs_on_the_core_dependencies(tmp_path):
    out = tmp_path / "run"
    proc = run_hidden(["train", "jobs/default.yaml", "--local", "-q", "train.max_steps=2", "train.eval_every=1000",
                       f"output.dir={out}"], tmp_path, extras_only_modules())
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["n_eval"] == 600 and 0.0 <= metrics["accuracy"] <= 1.0


def test_the_weight_check_without_accelerate_leaves_it_to_the_load(tmp_path):
    """Installed without its dependencies (pip --no-deps), accelerate may still be missing: the
    pre-flight check then steps aside instead of blaming config.json."""
    proc = run_hidden(["validate", "jobs/default.yaml"], tmp_path, [*extras_only_modules(), "accelerate"])
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert "config.json" not in proc.stdout + proc.stderr
