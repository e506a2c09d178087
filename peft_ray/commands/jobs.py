"""`peft-ray submit` and `peft-ray jobs list|status|logs|stop`: jobs on a running Ray cluster.

Submission goes through Ray's Jobs API (the dashboard's HTTP port), like `ray job
submit`: the working dir is uploaded, and the entrypoint `peft-ray train JOB.yaml
[overrides]` runs as the job's driver on the head node. The job is validated here
first, so a typo never costs an upload or a cluster slot.
"""

from __future__ import annotations

import shlex
import sys
import time
from datetime import datetime
from typing import Optional, Tuple

import click

from peft_ray.commands.options import fail
from peft_ray.errors import JobError

ADDRESS_HELP = ("Ray dashboard address, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, "
                "$RAY_ADDRESS, else http://127.0.0.1:8265 as forwarded by `ray dashboard cluster.yaml`).")
TIMEOUT_HELP = "Seconds to wait for the dashboard to answer before giving up."


def _connect(address: Optional[str], timeout: float):
    from peft_ray.submit.client import connect

    return connect(address, timeout, warn=lambda m: click.echo(m, err=True))


def _address_option(f):
    f = click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
                     help=TIMEOUT_HELP)(f)
    return click.option("--address", default=None, help=ADDRESS_HELP)(f)


@click.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@_address_option
@click.option("--follow", is_flag=True, help="Stream the job's output until it ends; exit 0 only if it succeeded.")
@click.option("--working-dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder uploaded with the job (the repo); JOB.yaml must be inside it.")
@click.option("--exclude", multiple=True, help="Extra gitignore-style pattern kept out of the upload (repeatable).")
@click.option("--include", multiple=True,
              help="Upload a file that looks like a secret (.env, keys, credentials) anyway (repeatable pattern).")
@click.option("--env", "env_pairs", multiple=True, help="NAME=value for the job's processes (repeatable).")
@click.option("--pip", multiple=True, help="Extra pip requirement installed for this job only (repeatable).")
@click.option("--resume", is_flag=True, help="Pass --resume to `peft-ray train` (continue output.dir).")
@click.option("--overwrite", is_flag=True, help="Pass --overwrite to `peft-ray train`.")
@click.option("--entrypoint-num-cpus", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="CPUs reserved for the driver (0: it only coordinates; CPUs stay with Ray Data and workers).")
@click.option("--entrypoint-num-gpus", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="GPUs reserved for the driver (it needs none: training runs in Ray Train workers).")
@click.option("--dry-run", is_flag=True, help="Validate and print the submission; contact no cluster.")
@click.option("--no-cpu-check", is_flag=True,
              help="Submit even if the cluster's CPUs, as they are now, leave Ray Data none next to the workers "
                   "(for clusters that add nodes on demand).")
def submit(job: str, overrides: Tuple[str, ...], address: Optional[str], timeout: float, follow: bool,
           working_dir: str, exclude: Tuple[str, ...], include: Tuple[str, ...], env_pairs: Tuple[str, ...],
           pip: Tuple[str, ...],
           resume: bool, overwrite: bool, entrypoint_num_cpus: float, entrypoint_num_gpus: float,
           dry_run: bool, no_cpu_check: bool) -> None:
    """Validate JOB.yaml here, then run `peft-ray train JOB.yaml [OVERRIDES]` on a Ray cluster.

    \b
      peft-ray submit jobs/default.yaml --address http://127.0.0.1:8265 --follow
      peft-ray submit jobs/sst2_prompt_tuning.yaml train.max_steps=200 scaling.num_workers=4 scaling.use_gpu=true
    """
    from peft_ray.submit.client import call, cluster_cpus, quiet_upload
    from peft_ray.submit.job import build_submission, check_cluster_cpus, parse_env
    from peft_ray.submit.upload import plan_upload

    try:
        plan = plan_upload(working_dir, exclude, include=include)
        sub = build_submission(job, overrides, plan, env=parse_env(env_pairs), pip=pip, resume=resume,
                               overwrite=overwrite, entrypoint_num_cpus=entrypoint_num_cpus,
                               entrypoint_num_gpus=entrypoint_num_gpus)
        for note in sub.notes:
            click.echo(f"note: {note}", err=True)
        _print_plan(sub, plan)
        if dry_run:
            click.echo(plan.listing())
            return
        client = _connect(address, timeout)
        if not no_cpu_check:
            note = check_cluster_cpus(sub, cluster_cpus(address, timeout))
            if note:
                click.echo(f"note: {note}", err=True)
        with quiet_upload():
            job_id = call(client.submit_job, **sub.kwargs())
    except JobError as e:
        fail(e)
    at = _address_arg(address)
    click.echo(f"submitted {job_id}\n  logs:   peft-ray jobs logs {job_id}{at} --follow\n"
               f"  status: peft-ray jobs status {job_id}{at}\n  stop:   peft-ray jobs stop {job_id}{at}")
    if follow:
        _follow(client, job_id, at)


def _address_arg(address: Optional[str]) -> str:
    """` --address X` when the command was given one: the commands it prints reach the same cluster."""
    return f" --address {shlex.quote(address)}" if address else ""


def _follow(client, job_id: str, at: str = "") -> None:
    """Stream the job's output, then exit 0 only if it succeeded."""
    from peft_ray.submit.client import follow_logs

    try:
        status = follow_logs(client, job_id, stop_hint=f"peft-ray jobs stop {job_id}{at}")
    except JobError as e:
        fail(e)
    click.echo(f"\njob {job_id}: {status}")
    sys.exit(0 if status == "SUCCEEDED" else 1)


def _print_plan(sub, plan) -> None:
    click.echo(f"submission id: {sub.submission_id}")
    click.echo(f"entrypoint: {sub.entrypoint}")
    env = sub.runtime_env.get("env_vars", {})
    click.echo(f"env: {' '.join(f'{k}={v}' for k, v in env.items())}")   # values were checked for secrets
    if sub.runtime_env.get("pip"):
        click.echo(f"pip: {' '.join(sub.runtime_env['pip'])}")
    click.echo(f"metadata: {', '.join(f'{k}={v!r}' for k, v in sub.metadata.items())}")
    click.echo(f"working dir: {plan.root} ({len(plan.files)} files, {plan.total_bytes / 2**20:.1f} MiB to upload)")
    for rel, size in plan.dropped_large:
        click.echo(f"  left out (large): {rel} ({size / 2**20:.0f} MiB)", err=True)


@click.group()
def jobs() -> None:
    """Jobs on a Ray cluster: list, status, logs, stop (same --address as `submit`)."""


@jobs.command("list")
@_address_option
def jobs_list(address: Optional[str], timeout: float) -> None:
    """Submitted jobs, newest first."""
    from peft_ray.submit.client import call

    try:
        rows = call(_connect(address, timeout).list_jobs)
    except JobError as e:
        fail(e)
    # Submitted jobs only: a script's own ray.init on the cluster is a driver "job" with no submission
    # id, whose logs `jobs logs` cannot fetch (Ray: "Can only get logs of submission type jobs").
    rows = sorted((j for j in rows if j.submission_id), key=lambda j: j.start_time or 0, reverse=True)
    click.echo(f"{'SUBMISSION ID':<46} {'STATUS':<10} {'STARTED':<19} {'TIME':>7}  JOB")
    for j in rows:
        click.echo(f"{j.submission_id:<46} {_status(j.status):<10} {_when(j.start_time):<19} "
                   f"{_took(j.start_time, j.end_time):>7}  {_what(j)}")


def _what(job) -> str:
    """The job file and its overrides (what tells two runs of one job apart), else the entrypoint."""
    meta = job.metadata or {}
    if "job_file" not in meta:
        return (job.entrypoint or "")[:60]
    text = " ".join(x for x in (meta["job_file"], meta.get("overrides", "")) if x)
    return text if len(text) <= 80 else text[:77] + "..."


@jobs.command("status")
@click.argument("job_id")
@_address_option
def jobs_status(job_id: str, address: Optional[str], timeout: float) -> None:
    """Status, timing, entrypoint and message of JOB_ID (exit 0 if running or succeeded)."""
    from peft_ray.submit.client import call

    try:
        info = call(_connect(address, timeout).get_job_info, job_id)
    except JobError as e:
        fail(e)
    status = _status(info.status)
    click.echo(f"{job_id}: {status}\n  started:    {_when(info.start_time)}\n"
               f"  duration:   {_took(info.start_time, info.end_time)}\n  entrypoint: {info.entrypoint}")
    meta = info.metadata or {}
    if meta.get("peft_ray_job"):
        click.echo(f"  job:        {meta['peft_ray_job']} ({meta.get('job_file', '?')}"
                   f"{' ' + meta['overrides'] if meta.get('overrides') else ''})")
    if info.message:
        click.echo(f"  message:    {info.message}")
    if info.driver_node_id:
        click.echo(f"  driver on node {info.driver_node_id}")
    sys.exit(1 if status in ("FAILED", "STOPPED") else 0)


@jobs.command("logs")
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends.")
@_address_option
def jobs_logs(job_id: str, follow: bool, address: Optional[str], timeout: float) -> None:
    """The driver output of JOB_ID (what `peft-ray train` printed on the head)."""
    from peft_ray.submit.client import call

    try:
        client = _connect(address, timeout)
        if not follow:
            click.echo(call(client.get_job_logs, job_id), nl=False)
            return
    except JobError as e:
        fail(e)
    _follow(client, job_id, _address_arg(address))


@jobs.command("stop")
@click.argument("job_id")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the job has stopped.")
@_address_option
def jobs_stop(job_id: str, wait: bool, address: Optional[str], timeout: float) -> None:
    """Stop JOB_ID (SIGTERM to the driver, then Ray kills it and its workers)."""
    from peft_ray.submit.client import TERMINAL, call, status_name

    try:
        client = _connect(address, timeout)
        stopped = call(client.stop_job, job_id)
        status = status_name(call(client.get_job_status, job_id))
        deadline = time.monotonic() + 60
        while wait and status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(1)
            status = status_name(call(client.get_job_status, job_id))
    except JobError as e:
        fail(e)
    click.echo(f"{job_id}: {status}" + ("" if stopped else " (it had already ended)"))


def _status(s) -> str:
    return str(getattr(s, "value", s))


def _when(ms: Optional[int]) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _took(start: Optional[int], end: Optional[int]) -> str:
    if not start:
        return "-"
    secs = int(((end or time.time() * 1000) - start) / 1000)
    return f"{secs // 60}m{secs % 60:02d}s"


def register(main: click.Group) -> None:
    main.add_command(submit)
    main.add_command(jobs)
