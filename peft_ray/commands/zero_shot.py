"""`peft-ray zero-shot JOB.yaml [overrides]`: what the prompt alone does, with no training.

Scores the job's validation split with its template and label words on the frozen base
model (peft_ray/zero_shot.py): the baseline every prompt-tuning or LoRA run is compared with.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Tuple

import click

from peft_ray.commands.options import check_output_file, fail
from peft_ray.errors import JobError
from peft_ray.storage import Location, check_output_dir, is_uri, join, write_file

EXAMPLES = """
\b
Examples:
  peft-ray zero-shot jobs/sst2_smollm2_zero_shot.yaml data.root=../shared/data/sst2
  peft-ray zero-shot jobs/sst2_smollm2_zero_shot.yaml 'template.text={text} It was {label}' \\
      'template.verbalizer={negative: [terrible], positive: [great]}'
"""


def register(main: click.Group) -> None:
    @main.command("zero-shot", epilog=EXAMPLES)
    @click.argument("job", type=click.Path(dir_okay=False))
    @click.argument("overrides", nargs=-1)
    @click.option("--output", type=click.Path(dir_okay=False), default=None,
                  help="Metrics JSON to write (default: <output.dir>/zero_shot.json).")
    @click.option("--batch-size", type=click.IntRange(min=1), default=None,
                  help="Rows per forward pass (default: train.eval_batch_size).")
    @click.option("--overwrite", is_flag=True,
                  help="Replace an existing --output file, or a zero_shot.json of another template, label words, "
                       "model or data (a rerun of the same replaces its own).")
    def zero_shot_cmd(job: str, overrides: Tuple[str, ...], output: Optional[str], batch_size: Optional[int],
                      overwrite: bool) -> None:
        """Evaluate JOB's template and verbalizer on the frozen base model, no training (in this process)."""
        from peft_ray.commands.eval import render_metrics
        from peft_ray.spec import load_spec
        from peft_ray.zero_shot import zero_shot_eval

        t0 = time.time()
        try:
            spec = load_spec(job, overrides)
            target = output_target(spec, output, overwrite)     # before the model loads, as eval
            metrics = zero_shot_eval(spec, batch_size)
        except JobError as e:
            fail(e)
        metrics["wall_seconds"] = time.time() - t0
        # the figures first: a failed write must not lose minutes of evaluation
        click.echo("\n" + render_metrics(metrics, f"peft-ray zero-shot: {spec.task.type}, template "
                                         f"{spec.template.text!r}"))
        try:
            write_metrics(target, json.dumps(metrics, indent=2))
        except OSError as e:
            fail(JobError(f"cannot write {target}: {e}"))
        click.echo(f"wrote {target}")


def write_metrics(target: str, text: str) -> None:
    """A URI through storage, as train writes there; a local file by write_file, which replaces a link
    planted at `target` instead of writing through it (Location.at resolves the final link)."""
    if is_uri(target):
        Location.at(target).write_text(text)
    else:   # output.dir (or --output's folder) of a first run is not there yet, as train makes it
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        write_file(Path(target), text)


def output_target(spec, output: Optional[str], overwrite: bool) -> str:
    """Where the metrics go, checked before any work: --output (a local file), or zero_shot.json in
    output.dir, a local folder or a URI written through storage as train writes there (as a local
    path, `s3://bucket/run` was a folder `s3:` in the current one)."""
    if output:
        return str(check_output_file(output, overwrite))
    check_output_dir(spec.output.dir)                      # an existing file, /proc, read-only: named now
    target = join(spec.output.dir, "zero_shot.json")
    if not is_uri(target) and Path(target).is_dir():
        raise JobError(f"output.dir: '{target}' is a folder; zero-shot writes its metrics to that name")
    if not overwrite and not is_uri(target):
        check_same_score(Path(target), spec)
    return target


def check_same_score(target: Path, spec) -> None:
    """The default zero_shot.json is replaced only by a score of the same template, label words, model
    and data (a rerun), else kept unless --overwrite: a baseline is not lost to the next variant."""
    from peft_ray.spec.load import shown
    from peft_ray.storage import own_json
    from peft_ray.zero_shot import scored_what

    if not (target.exists() or target.is_symlink()):
        return
    old = own_json(target)
    now = json.loads(json.dumps(scored_what(spec)))        # as the file holds it
    if not isinstance(old, dict) or "template" not in old:
        raise JobError(f"{target} holds a file zero-shot did not write; pass --overwrite to replace it, or "
                       "--output FILE")
    # Only what the file records: one written before a key was recorded is judged by the rest.
    differ = [d for k, v in now.items() if k in old for d in _differences(k, old[k], v)]
    if differ:
        said = "; ".join(f"{k} {shown(was)} there, {shown(is_)} here" for k, was, is_ in differ[:3])
        raise JobError(f"{target} already holds the score of another job ({said}); pass --overwrite to replace "
                       "it, or --output FILE to keep both")


def _differences(path: str, old, new) -> list:
    """(dotted path, old, new) of each leaf where two recorded values differ: a whole task section
    quoted and cut short hid the one field that differed (a diff review)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in dict.fromkeys([*old, *new]) for d in _differences(f"{path}.{k}", old.get(k), new.get(k))]
    return [] if old == new else [(path, old, new)]

