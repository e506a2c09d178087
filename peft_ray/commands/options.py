"""Options shared by several commands, so one name means one thing everywhere.

`--address` is the Ray *dashboard* URL (submit, jobs: Ray's Jobs API over HTTP);
`--ray-address` is a Ray *cluster* to join as a driver (eval, predict: `ray.init`).
"""

from __future__ import annotations

import sys
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
