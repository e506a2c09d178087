"""Turn `peft-ray submit JOB.yaml [overrides]` into a checked Ray Jobs submission.

Everything that can be checked on the laptop is checked before any upload: the
spec (schema, values, cross-field rules), and, when the data and model are on this
machine, the same pre-flight `peft-ray train` runs (files, columns, labels).
Relative paths are resolved against the working dir, because on the cluster the
job runs inside the uploaded copy of it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from peft_ray.errors import JobError
from peft_ray.security import looks_secret, redact_text
from peft_ray.submit.upload import UploadPlan

BASE_ENV = {"PYTHONUNBUFFERED": "1",          # driver output reaches `jobs logs` as it happens
            "TOKENIZERS_PARALLELISM": "false"}  # no fork warnings from HF tokenizers in Ray Data tasks


@dataclass
class Submission:
    """The arguments of JobSubmissionClient.submit_job, plus what the user should know."""

    entrypoint: str
    submission_id: str
    runtime_env: Dict[str, object]
    metadata: Dict[str, str]
    entrypoint_num_cpus: float = 0.0
    entrypoint_num_gpus: float = 0.0
    notes: List[str] = field(default_factory=list)
    spec: Any = field(default=None, repr=False)    # the validated job (not sent: for the cluster checks)

    def kwargs(self) -> Dict[str, object]:
        return dict(entrypoint=self.entrypoint, submission_id=self.submission_id, runtime_env=self.runtime_env,
                    metadata=self.metadata, entrypoint_num_cpus=self.entrypoint_num_cpus,
                    entrypoint_num_gpus=self.entrypoint_num_gpus)


def submission_id(job_name: str) -> str:
    """Readable and unique: peft-ray-<job>-<UTC time>-<4 hex> (two submits in one second differ)."""
    return f"peft-ray-{job_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


HOW_TO_PASS_SECRETS = ("Pass secrets through the nodes' own environment (set in the cluster's setup, e.g. "
                       "cluster.yaml setup_commands or the node's ~/.bashrc), instance roles, or a secret manager; "
                       "never on the command line of a job")


def check_overrides(overrides: Sequence[str]) -> None:
    """Overrides become the job's entrypoint, which the dashboard shows: no credentials there."""
    for o in overrides:
        key, _, value = o.partition("=")
        if looks_secret(key, value):
            raise JobError(f"override '{redact_text(o)}': looks like a credential, and the job's entrypoint "
                           f"is shown in the Ray dashboard. {HOW_TO_PASS_SECRETS}")


def check_pip(requirements: Sequence[str]) -> None:
    """--pip entries go into the runtime env, which the dashboard shows: no tokens in index URLs
    or git remotes."""
    for req in requirements:
        if looks_secret("", req):
            raise JobError(f"--pip '{redact_text(req)}': holds a credential (a token, or user:password@ in "
                           "a URL), and a job's runtime env is shown in the Ray dashboard. Put the index "
                           "credentials in the nodes' pip configuration (pip.conf, netrc) instead")


def parse_env(pairs: Sequence[str]) -> Dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise JobError(f"--env '{pair}' must look like NAME=value")
        if key.startswith("RAY_AUTH_"):
            raise JobError(f"--env {key}: the cluster has its own token; a token in a job's env_vars is "
                           "readable by anyone who can see the job in the dashboard")
        if looks_secret(key, value):
            raise JobError(f"--env {key}: looks like a secret, and a job's env_vars are shown verbatim in the "
                           f"Ray dashboard and `ray job list`. {HOW_TO_PASS_SECRETS}")
        out[key] = value
    return out


def build_submission(job: str, overrides: Sequence[str], plan: UploadPlan, *, env: Dict[str, str],
                     pip: Sequence[str] = (), resume: bool = False, overwrite: bool = False,
                     entrypoint_num_cpus: float = 0.0, entrypoint_num_gpus: float = 0.0) -> Submission:
    if resume and overwrite:   # as `train` refuses it, but before an upload and a job
        raise JobError("--resume continues the run in output.dir and --overwrite replaces it; pass one of them")
    job_path = Path(job).expanduser().resolve()
    if not job_path.is_file():
        raise JobError(f"job file '{job}' does not exist")
    if not plan.inside(job_path):
        raise JobError(f"job file '{job}' is outside the working dir {plan.root}, so it would not travel "
                       "with the job; move it under the working dir (e.g. jobs/) or pass --working-dir")
    plan.check_travels(job_path, "job file")
    check_overrides(overrides)
    check_pip(pip)
    spec, notes = validate_locally(job_path, overrides, plan)
    rel = plan.relative(job_path)
    args = ["peft-ray", "train", rel, *overrides] + (["--resume"] if resume else []) + \
        (["--overwrite"] if overwrite else [])
    runtime_env = {**plan.runtime_env(), "env_vars": {**BASE_ENV, **env}}
    if pip:
        runtime_env["pip"] = list(pip)
    meta = {"peft_ray_job": spec.name, "job_file": rel, "overrides": " ".join(overrides)}
    return Submission(shlex.join(args), submission_id(spec.name), runtime_env, meta,
                      entrypoint_num_cpus, entrypoint_num_gpus, notes, spec=spec)


NO_CPU_CHECK = "--no-cpu-check"


def check_cluster_cpus(sub: Submission, cluster_cpus: Optional[float]) -> Optional[str]:
    """Refuse a CPU job whose workers would leave Ray Data no CPU on the cluster as it is now (it
    would hang forever); the rule is train/fit.py's, as the local driver applies it. GPU jobs are
    left to the driver's own check: their workers land on GPU nodes, which often start on demand.
    Returns a note when the cluster's CPUs are unknown."""
    from peft_ray.train.fit import cpu_fit_problem

    scaling = sub.spec.scaling
    if scaling.use_gpu:
        return None
    if cluster_cpus is None:
        return "the cluster did not report its CPUs; skipped the check that the workers leave Ray Data a CPU"
    problem = cpu_fit_problem(scaling.num_workers, scaling.cpus_per_worker, cluster_cpus,
                              reserved=sub.entrypoint_num_cpus, where="the cluster (its alive nodes)")
    if problem:
        raise JobError(f"{problem}. If the cluster adds nodes on demand (autoscaling), pass {NO_CPU_CHECK}")
    return None


def validate_locally(job_path: Path, overrides: Sequence[str], plan: UploadPlan):
    """load_spec + (when the files are here) run_preflight, from inside the working dir."""
    from peft_ray.preflight import run_preflight
    from peft_ray.spec import load_spec
    from peft_ray.spec.load import absolute_paths

    notes: List[str] = []
    with contextlib.chdir(plan.root):
        spec = load_spec(job_path, overrides, resolve_paths=False)
        if "://" not in spec.output.dir and not Path(spec.output.dir).expanduser().is_absolute():
            notes.append(f"output.dir '{spec.output.dir}' is relative: on the cluster it lands in the job's "
                         "temporary copy of the working dir on the head node; set it to a folder every node "
                         "shares (see docs/cluster.md)")
        check_relative_paths_stay_inside(spec, plan)
        remote = not_on_this_machine(spec)
        spec = absolute_paths(spec)
        if remote:
            notes.append(f"{', '.join(remote)} not on this machine: skipped the file checks here; "
                         "`peft-ray train` runs them on the cluster before training")
        else:
            pre = run_preflight(spec)
            for f in pre.train.files + (pre.validation.files if pre.validation else []):
                plan.check_travels(Path(f), "data")
            plan.check_travels(Path(pre.model_path), "model.name_or_path")
            if getattr(spec.method, "init_from", None):
                plan.check_travels(Path(spec.method.init_from), "method.init_from")
    return spec, notes


def relative_paths(spec) -> List[Tuple[str, str]]:
    """(field, value) of the job's relative local paths: on the cluster they resolve against the
    job's copy of the working dir."""
    d = spec.data
    fields = [("data.root", d.root)] if d.root else [("data.train", d.train), ("data.validation", d.validation)]
    fields += [("method.init_from", getattr(spec.method, "init_from", None))]
    if Path(spec.model.name_or_path).expanduser().exists():
        fields.append(("model.name_or_path", spec.model.name_or_path))
    return [(f, v) for f, v in fields if v and "://" not in v and not v.startswith("builtin:")
            and not Path(v).expanduser().is_absolute()]


def check_relative_paths_stay_inside(spec, plan: UploadPlan) -> None:
    """A relative path that leaves the working dir (`../data`) passes the checks here, but is not
    uploaded and names nothing on the cluster: refuse it now, not after the upload."""
    for name, value in relative_paths(spec):
        if not Path(os.path.normpath(plan.root / value)).is_relative_to(plan.root):
            raise JobError(f"{name} '{value}' is relative and leads out of the working dir {plan.root}: it is not "
                           "uploaded, and on the cluster it resolves against the job's copy of the working dir. "
                           "Move it inside the working dir, or give a path every node can read (absolute, or a "
                           "URI such as s3://...)")


def not_on_this_machine(spec) -> List[str]:
    """Absolute paths or URIs that do not exist here (cluster-side storage). Relative paths travel
    with the working dir, so they must exist here and are always checked."""
    out = []
    root: Optional[str] = spec.data.root
    if root and not root.startswith("builtin:") and _elsewhere(root):
        out.append(f"data.root '{root}'")
    model = spec.model.name_or_path
    if model.startswith(("/", "~")) and _elsewhere(model):
        out.append(f"model.name_or_path '{model}'")
    init_from = getattr(spec.method, "init_from", None)
    if init_from and _elsewhere(init_from):
        out.append(f"method.init_from '{init_from}'")
    return out


def _elsewhere(path: str) -> bool:
    if "://" in path:
        return True
    p = Path(path).expanduser()
    return p.is_absolute() and not p.exists()
