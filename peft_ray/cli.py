"""The `peft-ray` command line."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Tuple

import click

from peft_ray.commands import register_all
from peft_ray.commands.options import fail
from peft_ray.errors import JobError

OVERRIDES_HELP = ("Overrides come after the job file as section.key=value, e.g. "
                  "train.max_steps=20 data.root=../shared/data/sst2 deepspeed.zero_stage=3")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="peft-ray")
def main() -> None:
    """peft-ray: parameter-efficient fine-tuning on Ray Train + DeepSpeed ZeRO.

    \b
    A job is one YAML file (see jobs/). Typical use:
      peft-ray validate jobs/default.yaml          # check everything, train nothing
      peft-ray train jobs/default.yaml             # Ray in-process, 2 workers, ZeRO-2
      peft-ray train jobs/sst2_prompt_tuning.yaml data.root=../shared/data/sst2
      peft-ray train JOB.yaml --resume             # continue from the latest good checkpoint
    """
    # Ray folds log lines that differ only in numbers into "[repeated Nx across cluster]": one
    # trial's eval line stood for another's (the trial ids differ only in digits) and steps came
    # out of order. Read once, when ray is imported, which the commands do later; a user's own
    # setting wins.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@main.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--resume", is_flag=True, help="Continue from the latest good checkpoint in output.dir.")
@click.option("--overwrite", is_flag=True, help="Replace a previous run in output.dir.")
@click.option("--local", "local", is_flag=True,
              help="Run the same recipe in this process without Ray (1 rank; data read with pyarrow).")
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
    from peft_ray.train.run_dir import check_can_start
    from peft_ray.train.local import local_spec
    from peft_ray.train.terminal import level_of

    if verbose and quiet:
        raise click.UsageError("use either -v/--verbose or -q/--quiet, not both")
    spec = None
    try:
        spec = load_spec(job, overrides)
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


def with_overrides_help(doc: str) -> str:
    """The docstring dedented first: click dedents the whole text at display time, and an appended
    unindented paragraph would leave the docstring's indent inside its re-wrapped lines."""
    import inspect

    return inspect.cleandoc(doc) + "\n\n" + OVERRIDES_HELP


def _is_terminal() -> bool:
    """Whether the progress bar draws on a terminal (a redrawing bar anywhere else is noise)."""
    return sys.stderr.isatty()


train.help = with_overrides_help(train.help)


@main.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
def validate(job: str, overrides: Tuple[str, ...]) -> None:
    """Check JOB.yaml as `train` would (schema, values, files, columns, labels, template, model
    path) without starting Ray or training."""
    from peft_ray.preflight import run_preflight
    from peft_ray.spec import load_spec
    from peft_ray.storage import check_output_dir

    try:
        spec = load_spec(job, overrides)
        check_output_dir(spec.output.dir)
        pre = run_preflight(spec)
        if spec.tune is not None:   # every template and search value, as `peft-ray tune` checks them
            from peft_ray.tune.runner import check_tune

            check_tune(spec)
    except JobError as e:
        fail(e)
    try:
        from peft_ray.train.ray_start import check_fits_this_machine

        check_fits_this_machine(spec)
    except JobError as e:    # a job meant for a cluster is valid; `train` here would refuse it
        click.echo(f"note: {e}", err=True)
    try:
        held = held_by(spec)
    except JobError as e:    # a cluster's bucket this machine cannot reach: the job may still be right
        held = ""
        click.echo(f"note: {e}; whether it already holds a run was not checked", err=True)
    if held:
        command = "tune" if spec.tune else "train"
        click.echo(f"note: output.dir '{spec.output.dir}' already holds {held}: `peft-ray {command}` needs "
                   "--resume to continue it or --overwrite to replace it", err=True)
    val = f", validation {pre.validation.usable} rows" if pre.validation else ""
    click.echo(f"ok: {spec.name}: {spec.method.name} on {spec.model.name_or_path}; train "
               f"{pre.train.usable} rows ({pre.train.skipped} skipped){val}; {pre.total_steps} steps "
               f"on {spec.scaling.num_workers} worker(s), ZeRO-{spec.deepspeed.zero_stage}")


validate.help = with_overrides_help(validate.help)


def held_by(spec) -> str:
    """"a run" or "a search" where output.dir already holds one (train or tune then needs --resume or
    --overwrite, which validate cannot know the user means), else ""."""
    from peft_ray.storage import Location

    out = Location.of_output(spec.output.dir)
    if not (out / "job.yaml").exists():
        return ""
    return "a search" if (out / "search.json").exists() else "a run"


@main.group()
def data() -> None:
    """Data sets the project makes itself."""


@data.command("make")
@click.argument("name", type=click.Choice(["sentiment", "facts", "instructions"]))
@click.argument("out_dir", type=click.Path(file_okay=False))
def data_make(name: str, out_dir: str) -> None:
    """Write the built-in data set NAME as Parquet files into OUT_DIR."""
    from peft_ray.data import builtin

    from peft_ray.commands.options import fail
    from peft_ray.errors import JobError

    try:
        click.echo(f"wrote {builtin.materialize(out_dir, name=name, keep_others=True)}")
    except JobError as e:
        fail(e)


register_all(main)

if __name__ == "__main__":
    main()
