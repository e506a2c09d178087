"""`peft-ray validate JOB.yaml [OVERRIDES]`: every check `train` makes before any cluster work,
without starting Ray or training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import click

from peft_ray.commands.options import fail, with_overrides_help
from peft_ray.errors import JobError


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("job", type=click.Path(dir_okay=False))
    @click.argument("overrides", nargs=-1)
    def validate(job: str, overrides: Tuple[str, ...]) -> None:
        """Check JOB.yaml as `train` would (schema, values, files, columns, labels, template, model
        path) without starting Ray or training."""
        from peft_ray.preflight import note_sample_cut, run_preflight
        from peft_ray.spec import load_spec
        from peft_ray.storage import check_output_dir

        from peft_ray.train.ray_start import check_cluster_address

        try:
            spec = load_spec(job, overrides)
            check_output_dir(spec.output.dir)
            check_cluster_address(spec.scaling.address, "scaling.address")   # as `train` refuses it
            pre = run_preflight(spec)
            note_sample_cut(spec, pre)
            if spec.tune is not None:   # every template and search value, as `peft-ray tune` checks them
                from peft_ray.tune.runner import check_tune

                check_tune(spec)
        except JobError as e:
            fail(e)
        try:   # the shell of a `peft-ray submit` user exports the dashboard URL (docs/cluster.md): a note
            check_cluster_address(os.environ.get("RAY_ADDRESS"), "$RAY_ADDRESS")
        except JobError as e:
            click.echo(f"note: {e}; `peft-ray train` in this shell would refuse it", err=True)
        try:
            from peft_ray.train.ray_start import check_fits_this_machine

            check_fits_this_machine(spec)
            if spec.tune is not None:      # every candidate trial, as `tune` refuses them here
                from peft_ray.tune.fit import check_fits_here

                check_fits_here(spec)
        except JobError as e:    # a job meant for a cluster is valid; `train` (`tune`) here would refuse it
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
    if (out / "search.json").exists():   # a search's plan; one that never began is simply run again
        from peft_ray.tune.folder import search_started

        return "a search" if search_started(Path(spec.output.dir).expanduser()) else ""
    return "a run"
