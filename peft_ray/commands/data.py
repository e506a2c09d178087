"""`peft-ray data make NAME OUT_DIR`: the data sets the project makes itself."""

from __future__ import annotations

import click

from peft_ray.commands.options import fail
from peft_ray.errors import JobError


def register(main: click.Group) -> None:
    @main.group()
    def data() -> None:
        """Data sets the project makes itself."""


    @data.command("make")
    @click.argument("name", type=click.Choice(["sentiment", "facts", "instructions"]))
    @click.argument("out_dir", type=click.Path(file_okay=False))
    def data_make(name: str, out_dir: str) -> None:
        """Write the built-in data set NAME as Parquet files into OUT_DIR."""
        from peft_ray.data import builtin

        try:
            click.echo(f"wrote {builtin.materialize(out_dir, name=name, keep_others=True)}")
        except JobError as e:
            fail(e)
