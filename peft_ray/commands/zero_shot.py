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

from peft_ray.commands.options import fail
from peft_ray.errors import JobError
from peft_ray.storage import write_file

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
    @click.option("--overwrite", is_flag=True, help="Replace an existing --output file.")
    def zero_shot_cmd(job: str, overrides: Tuple[str, ...], output: Optional[str], batch_size: Optional[int],
                      overwrite: bool) -> None:
        """Evaluate JOB's template and verbalizer on the frozen base model, no training (in this process)."""
        from peft_ray.commands.eval import render_metrics
        from peft_ray.spec import load_spec
        from peft_ray.zero_shot import zero_shot_eval

        t0 = time.time()
        try:
            spec = load_spec(job, overrides)
            if output and Path(output).exists() and not overwrite:   # before the model loads, as eval
                raise JobError(f"--output '{output}' already exists; pass --overwrite to replace it, or name a "
                               "new file")
            metrics = zero_shot_eval(spec, batch_size)
        except JobError as e:
            fail(e)
        metrics["wall_seconds"] = time.time() - t0
        out = Path(output) if output else Path(spec.output.dir) / "zero_shot.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_file(out, json.dumps(metrics, indent=2))
        click.echo("\n" + render_metrics(metrics, f"peft-ray zero-shot: {spec.task.type}, template "
                                         f"{spec.template.text!r}"))
        click.echo(f"wrote {out}")
