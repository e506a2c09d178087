"""`peft-ray predict ADAPTER_OR_RUN --input FILE --output FILE`: batch inference with Ray Data.

Checks everything on the driver first, then streams the input through peft_ray/prediction.py's
actor pool (or its in-process Predictor with --local) and appends the rows to the output file
(data/sinks.py) as they arrive, so neither side holds the whole data set.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, List, Optional

import click

from peft_ray.commands.options import (check_output_file, fail, local_option, local_output, overwrite_option,
                                       ray_address_option)
from peft_ray.errors import DataError, JobError
from peft_ray.security import Trust, trust_flags

EXAMPLES = """
\b
Examples:
  peft-ray predict runs/default --input new.parquet --output preds.parquet
  peft-ray predict runs/ner/adapter --input sents.jsonl --output tags.jsonl --num-actors 2
  peft-ray predict runs/default --input 'shards/*.parquet' --output preds.jsonl --ray-address auto
  peft-ray predict runs/default --input five_rows.jsonl --output preds.jsonl --local   # no Ray
  peft-ray predict runs/default --input reviews.csv --output preds.csv --local

\b
Output: every input row, in input order, plus `prediction` (a label; a list of IOB2 tags per
word for token_classification; the generated text for generation/translation), for
classification `scores` (label -> probability), and `input_truncated` (the row was cut to the
job's model.max_length). Rows the task cannot use (empty text) get null there. .parquet is
written with pyarrow; .jsonl/.json as JSON Lines; .csv with one column per score
(`scores.positive`) and lists (NER tags) as JSON text.
"""


def register(main: click.Group) -> None:
    @main.command(epilog=EXAMPLES)
    @click.argument("adapter_or_run")
    @click.option("--input", "input_path", required=True,
                  help="Rows to predict on: a file, folder or glob (.parquet, .arrow, .csv, .jsonl).")
    @click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False),
                  help="Where to write: .parquet, .jsonl/.json (JSON Lines) or .csv.")
    @click.option("--batch-size", type=click.IntRange(min=1), default=None,
                  help="Rows per forward pass (default: the run's train.eval_batch_size).")
    @click.option("--num-actors", type=click.IntRange(min=1), default=1, show_default=True,
                  help="Model replicas (Ray actors, 1 CPU each) predicting in parallel.")
    @ray_address_option
    @local_option("Predict")
    @overwrite_option("--output")
    @trust_flags
    def predict(adapter_or_run: str, input_path: str, output_path: str, batch_size: Optional[int],
                num_actors: int, ray_address: Optional[str], old_address: Optional[str], local: bool,
                overwrite: bool, trust_remote_code: bool, allow_pickle: bool, base_model: Optional[str]) -> None:
        """Predict with a trained adapter (a run's output.dir or its adapter/ folder) on every row
        of --input, through a Ray Data actor pool (or in-process with --local); write the rows plus
        the predictions to --output."""
        if local and num_actors > 1:
            click.echo(f"note: --num-actors {num_actors} sizes Ray's actor pool; --local predicts in this "
                       "process (its threads: OMP_NUM_THREADS)", err=True)
        try:
            done = run_predict(adapter_or_run, input_path, local_output(output_path), batch_size, num_actors,
                               ray_address or old_address, local=local,
                               trust=Trust(trust_remote_code, allow_pickle, base_model), overwrite=overwrite)
        except JobError as e:
            fail(e)
        if done["truncated"]:
            from peft_ray.summary import truncation_note

            click.echo(truncation_note(done["truncated"], done["max_length"]) + " (column `input_truncated`)",
                       err=True)
        click.echo(f"wrote {done['rows']} rows to {done['output']} ({done['null']} without a prediction)")


OUTPUT_COLUMNS = ("prediction", "scores", "input_truncated")   # what predict adds (Predictor.fields + cut)


def check_no_output_names(files) -> None:
    """An input column named like one predict adds (a gold `prediction`, an earlier model's `scores`;
    CSV flattens scores to `scores.<label>`) was replaced without a word: refused in every file
    before the model loads, so a gold-labelled file is never overwritten in the output."""
    from peft_ray.data.sources import read_schema

    for path in files:
        taken = [n for n in read_schema([path]).names if n in OUTPUT_COLUMNS or n.startswith("scores.")]
        if taken:
            raise DataError(f"--input '{path}': column(s) {', '.join(repr(n) for n in taken)} share a name with "
                            f"what predict adds ({', '.join(OUTPUT_COLUMNS)}, scores.<label> in CSV), so the output "
                            "would replace them; rename them in the input (e.g. gold_prediction)")


def run_predict(adapter_or_run: str, input_path: str, output: Path, batch_size: Optional[int],
                num_actors: int, address: Optional[str], local: bool = False, trust: Trust = Trust(),
                overwrite: bool = False) -> Dict:
    """Check everything on the driver (no weights loaded), then stream the input through the actors
    (or, `local`, through one Predictor in this process)."""
    from peft_ray.data.sinks import FORMATS, open_sink
    from peft_ray.data.sources import check_plain_files, resolve_files
    from peft_ray.inference import (check_adapter, check_columns, count_rows, find_adapter_dir, ray_session,
                                    with_progress)
    from peft_ray.prediction import check_actors_fit_here, local_predictions, ray_predictions
    from peft_ray.tasks.pipeline import input_columns
    from peft_ray.train.terminal import ray_routed

    adapter_dir = find_adapter_dir(adapter_or_run)
    spec = check_adapter(adapter_dir, trust).spec
    files = resolve_files(None, input_path, "--input")
    check_output(output, files, overwrite)
    # Ray Data reads the files as one table, and a Parquet output holds one type per column: there every
    # column must agree across the files; --local into JSON Lines or CSV writes each file's rows as they are
    one_table = not local or FORMATS[Path(output).suffix.lower()] == "parquet"
    check_columns(files, input_columns(spec), "--input", spec, every_column=one_table, csv_as_text=True)
    check_no_output_names(files)
    if not local:
        # Ray Data reads every column of every file in its workers (the output keeps them all); --local
        # reads with iter_arrow, which checks each file as it opens it
        check_plain_files(files)
        check_actors_fit_here(num_actors, address)
    bs = batch_size or spec.train.eval_batch_size
    rows = null = cut = 0
    # Ray's own lines: in OUTPUT.log, next to the predictions
    with ray_routed(None if local else output.with_name(output.name + ".log")), \
            (contextlib.nullcontext() if local else ray_session(spec, address)):
        tables = (local_predictions(files, adapter_dir, bs, trust) if local
                  else ray_predictions(files, adapter_dir, bs, num_actors, address, trust))
        with open_sink(output) as write:
            for table in with_progress(tables, count_rows(files), "predict"):
                write(table)
                rows, null = rows + table.num_rows, null + table["prediction"].null_count
                cut += table["input_truncated"].to_pylist().count(True)
    return {"rows": rows, "null": null, "output": output, "truncated": cut, "max_length": spec.model.max_length}


def check_output(output: Path, inputs: List[str], overwrite: bool = False) -> None:
    from peft_ray.data.sinks import FORMATS

    if output.suffix.lower() not in FORMATS:
        raise DataError(f"--output '{output}': extension '{output.suffix}' is not supported; use .parquet, "
                        ".jsonl or .json (JSON Lines), or .csv")
    if output.resolve() in {Path(f).resolve() for f in inputs}:
        raise DataError(f"--output '{output}' is also an input file; write the predictions somewhere else")
    if output.is_dir():
        raise DataError(f"--output '{output}' is a folder; name the file to write, e.g. {output / 'preds.jsonl'}")
    check_output_file(str(output), overwrite)   # not there unless --overwrite, a writable folder: before the model loads


