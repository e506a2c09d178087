"""`peft-ray config JOB.yaml [overrides]` and `peft-ray schema`: the job as peft-ray sees it.

`config` prints the fully resolved job (every default filled in, relative paths made
absolute, secrets redacted: what train writes to job.yaml). `schema` writes the JSON
Schema of a job file, method fields per `method.name`, for editors (e.g. the YAML
language server: `# yaml-language-server: $schema=peft-ray-job.schema.json`).
"""

from __future__ import annotations

import json
from typing import Optional, Tuple

import click

from peft_ray.commands.options import check_output_file, fail, overwrite_option
from peft_ray.errors import JobError
from peft_ray.storage import write_file


@click.command("config")
@click.argument("job", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
def config_cmd(job: str, overrides: Tuple[str, ...]) -> None:
    """Print JOB.yaml fully resolved, with every default, as YAML (what train records as job.yaml).

    \b
      peft-ray config jobs/default.yaml
      peft-ray config jobs/default.yaml method=lora train.max_steps=20 > resolved.yaml
    """
    import yaml

    from peft_ray.spec import load_spec, saved_spec

    try:
        resolved = saved_spec(load_spec(job, overrides))
    except JobError as e:
        fail(e)
    click.echo(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), nl=False)


@click.command("schema")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="File to write (default: print to stdout).")
@overwrite_option("--output")
def schema_cmd(output: Optional[str], overwrite: bool) -> None:
    """Write the JSON Schema of a job file: every section and field with its default and bounds,
    and the fields of each method under its method.name.

    \b
      peft-ray schema -o peft-ray-job.schema.json
      # then, first line of a job file:  # yaml-language-server: $schema=peft-ray-job.schema.json
    """
    from peft_ray.methods import METHODS
    from peft_ray.spec.schema import job_json_schema
    from peft_ray.tasks import TASKS

    try:
        out = None if output is None else check_output_file(output, overwrite)
    except JobError as e:
        fail(e)
    methods = tuple(METHODS.get(n).config_cls for n in METHODS.names())
    tasks = tuple(dict.fromkeys(TASKS.get(n).config_cls for n in TASKS.names()))   # generation/translation share one
    text = json.dumps(job_json_schema(methods, tasks), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    write_file(out, text)             # a new file renamed into place: a link at `out` is replaced, not followed
    click.echo(f"wrote {out}", err=True)


def register(main: click.Group) -> None:
    main.add_command(config_cmd)
    main.add_command(schema_cmd)
