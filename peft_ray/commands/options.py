"""Options shared by several commands, so one name means one thing everywhere.

`--address` is the Ray *dashboard* URL (submit, jobs: Ray's Jobs API over HTTP);
`--ray-address` is a Ray *cluster* to join as a driver (eval, predict: `ray.init`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from peft_ray.errors import JobError

RAY_ADDRESS_HELP = "Ray cluster to join, e.g. auto or HEAD:6379 (default: $RAY_ADDRESS, else Ray in-process)."


def _deprecated_address(ctx: click.Context, _param, value):
    if value is not None:
        click.echo("warning: --address is deprecated for this command (it meant a Ray cluster here, but the "
                   "Ray dashboard URL in submit/jobs); use --ray-address", err=True)
    return value


def ray_address_option(f):
    """--ray-address, with the old --address kept as a hidden, warning alias."""
    f = click.option("--address", "old_address", default=None, hidden=True, expose_value=True,
                     callback=_deprecated_address)(f)
    return click.option("--ray-address", "ray_address", default=None, help=RAY_ADDRESS_HELP)(f)


def local_option(what: str):
    return click.option("--local", "local", is_flag=True,
                        help=f"{what} in this process without Ray (for small inputs and quick checks).")


def overwrite_option(what: str):
    return click.option("--overwrite", is_flag=True, help=f"Replace {what} if it exists (refused otherwise).")


def fail(e: JobError) -> NoReturn:
    """Every command's way out on a JobError: its message on stderr, its exit code."""
    click.echo(f"error: {e}", err=True)
    sys.exit(e.exit_code)


def local_output(value: str, arg: str = "--output") -> Path:
    """A file named on the command line to write here. A URI is refused: as a local path
    `s3://bucket/x.json` is a folder `s3:` in the current one, where the metrics would land unseen."""
    from peft_ray.security import redact_text
    from peft_ray.storage import is_uri

    if is_uri(value):
        raise JobError(f"{arg} '{redact_text(value)}' is a URI; {arg} names a local file. Write it here and copy "
                       "it to storage afterwards (the run's own files go to a URI output.dir through train)")
    return Path(value)


def check_output_file(value: str, overwrite: bool, arg: str = "--output") -> Path:
    """A local file to write at the end, checked before any work (a model load, a pass over data):
    not a URI, not an existing file unless --overwrite, in a folder that can be made and written."""
    from peft_ray.storage import check_output_dir

    from peft_ray.storage import temp_name

    out = local_output(value, arg)
    if len(temp_name(out.name).encode()) > 255:   # written beside under a temporary name, then renamed
        raise JobError(f"{arg} '{out.name[:48]}...': the name is longer than a file system allows; name a "
                       "shorter file")
    if (out.exists() or out.is_symlink()) and not overwrite:      # a dangling link is there too
        raise JobError(f"{arg} '{out}' already exists; pass --overwrite to replace it, or name a new file")
    check_output_dir(str(out.parent), f"{arg}'s folder")
    return out


OVERRIDES_HELP = ("Overrides come after the job file as section.key=value, e.g. "
                  "train.max_steps=20 data.root=../shared/data/sst2 deepspeed.zero_stage=3")


def with_overrides_help(doc: str) -> str:
    """The docstring dedented first: click dedents the whole text at display time, and an appended
    unindented paragraph would leave the docstring's indent inside its re-wrapped lines."""
    import inspect

    return inspect.cleandoc(doc) + "\n\n" + OVERRIDES_HELP
