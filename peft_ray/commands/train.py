"""`peft-ray train JOB.yaml [OVERRIDES]`: train on Ray (or in this process with --local), with the
terminal routed (train/terminal.py) and the summary last."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Tuple

import click

from peft_ray.commands.options import fail, with_overrides_help
from peft_ray.errors import JobError


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("job", type=click.Path(dir_okay=False))
    @click.argument("overrides", nargs=-1)
    @click.option("--resume", is_flag=True, help="Continue from the latest good checkpoint in output.dir.")
    @click.option("--overwrite", is_flag=True, help="Replace a previous run in output.dir.")
    @click.option("--local", "local", is_flag=True,
                  help="Run the same recipe without Ray, in this process with the worker group's threads "
                       "(scaling.local_ranks > 1: that many ranks as processes); data read with pyarrow.")
    @click.option("-v", "--verbose", is_flag=True, help="Also show Ray's, DeepSpeed's and the workers' own output.")
    @click.option("-q", "--quiet", is_flag=True, help="Only warnings, errors and the summary (no progress bar).")
    def train(job: str, overrides: Tuple[str, ...], resume: bool, overwrite: bool, local: bool,
              verbose: bool, quiet: bool) -> None:
        """Train JOB.yaml on Ray: Ray Data -> Ray Train workers -> DeepSpeed ZeRO.

        Writes OUTPUT_DIR/adapter (the best evaluation's, HF PEFT layout), adapter_last,
        metrics.json, metrics.jsonl, tensorboard/, curves.png, train.log and job.yaml.
        """
        from peft_ray.spec import load_spec
        from peft_ray.train.ray_start import check_cluster_address, check_fits_this_machine
        from peft_ray.train.run_dir import check_can_start, check_job_file_kept
        from peft_ray.train.local import local_spec
        from peft_ray.train.terminal import level_of

        if verbose and quiet:
            raise click.UsageError("use either -v/--verbose or -q/--quiet, not both")
        spec = None
        try:
            spec = load_spec(job, overrides)
            check_job_file_kept(job, spec.output.dir)
            check_can_start(local_spec(spec) if local else spec, resume, overwrite, local)   # before train.log opens
            if not local:
                check_cluster_address(spec.scaling.address, "scaling.address")
                check_cluster_address(os.environ.get("RAY_ADDRESS"), "$RAY_ADDRESS")
                check_fits_this_machine(spec)      # before train.log and output.dir are made
            _train_routed(spec, level_of(verbose, quiet), resume=resume, overwrite=overwrite, local=local)
        except JobError as e:
            fail(e)
        except KeyboardInterrupt:
            if spec is not None:
                click.echo("\n" + _interrupted(job, overrides, spec, local=local, overwrite=overwrite), err=True)
            sys.exit(130)

    train.help = with_overrides_help(train.help)


def _interrupted(job: str, overrides: Tuple[str, ...], spec, *, local: bool, overwrite: bool) -> str:
    """What Ctrl-C of `train` leaves, and the command that goes on from there."""
    from peft_ray.storage import is_uri
    from peft_ray.train.checkpoint import latest_good_checkpoint

    again = ["peft-ray", "train", job, *overrides, *(["--local"] if local else [])]
    if overwrite:    # replaced.py: a run that does not finish puts the folder's earlier content back
        return (f"interrupted: {spec.output.dir} holds what it held before this --overwrite run. Start again "
                f"with:\n  {shlex.join(again + ['--overwrite'])}")
    if not local or is_uri(spec.output.dir):   # (Ray Train handles Ctrl-C itself once training runs)
        return (f"interrupted. If the run wrote a checkpoint, continue it with:\n  {shlex.join(again + ['--resume'])}"
                f"\notherwise start again with:\n  {shlex.join(again + ['--overwrite'])}")
    where = Path(spec.output.dir) / "checkpoints"
    if not (where.is_dir() and latest_good_checkpoint(where, warn=lambda _: None)):
        return (f"interrupted before the first checkpoint (train.checkpoint_every). Start again with:\n  "
                f"{shlex.join(again + ['--overwrite'])}")
    return f"interrupted. Continue from the run's last checkpoint with:\n  {shlex.join(again + ['--resume'])}"


def _train_routed(spec, level: str, *, resume: bool, overwrite: bool, local: bool) -> None:
    """The run with the terminal routed (train/terminal.py); the summary comes last."""
    from peft_ray.storage import is_uri
    from peft_ray.summary import render_summary
    from peft_ray.tasks import get_task
    from peft_ray.train import terminal

    log = None if is_uri(spec.output.dir) else Path(spec.output.dir) / "train.log"
    bar = "none" if level == "quiet" else ("tqdm" if local else "ray") if _is_terminal() else "lines"
    with terminal.routed(log, level, pass_bars=not local) as term:
        if local:
            from peft_ray.train.local import run_local
            metrics = run_local(spec, resume=resume, overwrite=overwrite, bar=bar)
        else:
            from peft_ray.train.driver import run_train
            metrics = run_train(spec, resume=resume, overwrite=overwrite, bar=bar)
            terminal.close_ray_bars()
        task_rows = get_task(spec.task.type).summary_rows
        term.show("\n" + render_summary(metrics, f"peft-ray: {spec.name} ({spec.method.name})", task_rows)
                  + (f"\nlog: {log}" if log else ""))


def _is_terminal() -> bool:
    """Whether the progress bar draws on a terminal (a redrawing bar anywhere else is noise)."""
    return sys.stderr.isatty()
