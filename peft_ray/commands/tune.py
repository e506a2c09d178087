"""`peft-ray tune JOB.yaml [overrides]`: a Ray Tune search over templates, verbalizers, methods
and hyper-parameters (the job's `tune:` section; see docs/tune.md)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Tuple

import click

from peft_ray.commands.options import fail
from peft_ray.errors import JobError


def register(main: click.Group) -> None:
    main.add_command(tune)


@click.command()
@click.argument("job", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--resume", is_flag=True, help="Continue an interrupted search in output.dir: finished trials "
              "are kept, unfinished ones continue from their last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a previous search in output.dir.")
@click.option("-v", "--verbose", is_flag=True, help="Also show Ray's and the trials' own output, and every "
              "trial's start, results and end.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings, errors, the leaderboard and the best trial.")
def tune(job: str, overrides: Tuple[str, ...], resume: bool, overwrite: bool, verbose: bool, quiet: bool) -> None:
    """Search the job's `tune:` section on Ray Tune; every trial is a `peft-ray train` run."""
    from peft_ray.spec import load_spec
    from peft_ray.storage import check_output_dir, is_uri
    from peft_ray.train import terminal

    if verbose and quiet:
        raise click.UsageError("use either -v/--verbose or -q/--quiet, not both")
    level = terminal.level_of(verbose, quiet)
    spec = None
    try:
        spec = load_spec(job, overrides)
        check_output_dir(spec.output.dir)
        from peft_ray.train.run_dir import check_job_file_kept
        from peft_ray.tune.folder import check_can_start_search   # before tune.log opens in output.dir

        check_job_file_kept(job, spec.output.dir)

        check_can_start_search(spec, resume, overwrite)
        from peft_ray.tune.fit import check_fits_here

        check_fits_here(spec)    # an in-process Ray too small for a trial: said before tune.log opens
        # As `train`: everything goes to OUTPUT_DIR/tune.log, the terminal gets peft-ray's lines
        # and Tune's status heartbeat (default), or less (-q), or all of it (-v).
        log = None if is_uri(spec.output.dir) else Path(spec.output.dir).expanduser() / "tune.log"
        with terminal.routed(log, level, keep=terminal.TUNE_PROGRESS):
            # imported here: Ray's loggers bind the stderr they find at import, which must be the router
            from peft_ray.tune.runner import run_tune

            run_tune(spec, resume=resume, overwrite=overwrite, job_path=job,
                     verbosity=terminal.LEVELS.index(level))
    except JobError as e:
        fail(e)
    except KeyboardInterrupt:   # before Ray Tune took over Ctrl-C (it ends a running search itself)
        if spec is not None:
            click.echo("\n" + _interrupted(job, overrides, spec, overwrite), err=True)
        sys.exit(130)


def _interrupted(job: str, overrides: Tuple[str, ...], spec, overwrite: bool) -> str:
    """What Ctrl-C before Ray Tune took over leaves, and the command that goes on from there."""
    from peft_ray.tune.folder import EXPERIMENT

    again = ["peft-ray", "tune", job, *overrides]
    if overwrite:    # replaced.py: a search that does not finish puts the folder's earlier content back
        return (f"interrupted: {spec.output.dir} holds what it held before this --overwrite search. Start again "
                f"with:\n  {shlex.join(again + ['--overwrite'])}")
    if (Path(spec.output.dir).expanduser() / EXPERIMENT).is_dir():
        return f"interrupted. Continue the search with:\n  {shlex.join(again + ['--resume'])}"
    return f"interrupted before the search began. Start it again with:\n  {shlex.join(again)}"


tune.help = """Search the job's `tune:` section on Ray Tune; every trial is a `peft-ray train` run.

Every candidate trial spec is checked before Ray starts. ASHA (the default scheduler) stops
weak trials at their evaluations (train.eval_every). Writes into output.dir: leaderboard.csv
and .json, curves.png, adapter/ (the best trial's, HF PEFT layout) and best_job.yaml.

\b
  peft-ray tune jobs/sst2_template_search.yaml data.root=../shared/data/sst2
  peft-ray tune JOB.yaml tune.num_samples=4 tune.scheduler.name=fifo
  peft-ray tune JOB.yaml --resume
  peft-ray tune JOB.yaml -q                   # warnings, errors and the leaderboard only

Everything the search prints also goes to OUTPUT_DIR/tune.log.

Overrides come after the job file as section.key=value, e.g. train.max_steps=20
tune.num_samples=2 data.root=../shared/data/sst2"""
