"""`peft-ray eval ADAPTER_OR_RUN --data FILE_OR_DIR`: score a trained adapter on labelled data
(the work is peft_ray/evaluation.py's run_eval)."""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

import click

from peft_ray.commands.options import (check_output_file, fail, local_option,
                                       ray_address_option)
from peft_ray.errors import JobError
from peft_ray.security import Trust, trust_flags

EXAMPLES = """
\b
Examples:
  peft-ray eval runs/default --data builtin:sentiment          # the job's own validation split
  peft-ray eval runs/sst2-lora --data ../shared/data/sst2      # a folder: the job's file for --split
  peft-ray eval runs/sst2-lora/adapter --data test.parquet --split test --output test_metrics.json
  peft-ray eval runs/default --data builtin:sentiment --local    # no Ray: read and score in-process

\b
--data is a file or glob (all of it is scored), or a data folder (or builtin:NAME), from
which the job's own file for --split is taken, with the job's validation_fraction hold-out
if it had one. Writes the metrics as JSON (default: eval_<split>.json next to the adapter,
i.e. in the run folder).
"""


def register(main: click.Group) -> None:
    @main.command("eval", epilog=EXAMPLES)
    @click.argument("adapter_or_run")
    @click.option("--data", "data", required=True,
                  help="Labelled rows: a file or glob (.parquet, .arrow, .csv, .jsonl), or a data folder.")
    @click.option("--split", default=None, callback=_split_name,
                  help="With a data folder: which of the job's files to score (validation or train; default "
                       "validation). With a file: only names the output (default: the file's name).")
    @click.option("--output", type=click.Path(dir_okay=False), default=None,
                  help="Metrics JSON to write (default: eval_<split>.json next to the adapter).")
    @click.option("--overwrite", is_flag=True,
                  help="Replace an existing --output file, or a default metrics file that holds another adapter's or "
                       "data's metrics (refused otherwise; scoring the same adapter and data again replaces its own).")
    @click.option("--batch-size", type=click.IntRange(min=1), default=None,
                  help="Rows per forward pass (default: the run's train.eval_batch_size).")
    @ray_address_option
    @local_option("Read and score")
    @trust_flags
    def eval_cmd(adapter_or_run: str, data: str, split: Optional[str], output: Optional[str], overwrite: bool,
                 batch_size: Optional[int], ray_address: Optional[str], old_address: Optional[str], local: bool,
                 trust_remote_code: bool, allow_pickle: bool, base_model: Optional[str]) -> None:
        """Evaluate a trained adapter (a run's output.dir or its adapter/ folder) on labelled data:
        print the task's metrics and write them as JSON."""
        from peft_ray.evaluation import run_eval

        try:
            out = None if output is None else check_output_file(output, overwrite)
            done = run_eval(adapter_or_run, data, split, out, batch_size, ray_address or old_address,
                            local=local, trust=Trust(trust_remote_code, allow_pickle, base_model), overwrite=overwrite)
        except JobError as e:
            fail(e)
        if done.note:
            click.echo(done.note, err=True)
        metrics = done.metrics
        click.echo("\n" + render_metrics(metrics, f"peft-ray eval: {metrics['task']} on {metrics['split']}"))
        click.echo(f"wrote {done.out}")


def _split_name(ctx, param, value: Optional[str]) -> Optional[str]:
    """--split becomes part of a file name (eval_<split>.json): a plain name, never a path."""
    if value is not None and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value) or ".." in value):
        raise click.BadParameter(f"'{value}' is not a split name: use letters, digits, '_', '-' or '.' "
                                 "(e.g. validation, train, test); --output names the metrics file")
    return value


def render_metrics(metrics: Dict[str, Any], title: str) -> str:
    """The task's headline metrics first, then the other numbers, one per line."""
    from peft_ray.tasks import get_task

    head = [k for k in get_task(metrics["task"]).headline if k in metrics]
    rest = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and k not in head)
    rows = [(k, f"{metrics[k]:.4f}" if isinstance(metrics[k], float) else str(metrics[k])) for k in head + rest]
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * min(79, max(len(title), width + 2 + max(len(v) for _, v in rows)))]
    return "\n".join(lines + [f"{k:<{width}}  {v}" for k, v in rows])
