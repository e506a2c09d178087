"""`peft-ray predict ADAPTER_OR_RUN --input FILE --output FILE`: batch inference with Ray Data.

Input rows stream through `map_batches` into a fixed pool of actors, each holding the model
once (`Predictor`); the driver iterates the output in order and appends it to the output
file as it arrives, so neither side holds the whole data set. Output rows are the input
rows, in input order, plus `prediction` (and `scores` for classification); a row the task
cannot use (e.g. empty text) gets nulls there instead of being dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from typing import TYPE_CHECKING

import click

from peft_ray.commands.options import (check_output_file, fail, local_option, local_output, overwrite_option,
                                       ray_address_option)
from peft_ray.errors import DataError, JobError
from peft_ray.security import Trust, trust_flags

if TYPE_CHECKING:  # pyarrow/torch load in the command bodies: `--help` must not pay for them
    import pyarrow as pa

ROWS_PER_CALL = 256          # rows per actor call: the unit of streaming and of length grouping
FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}

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
                overwrite: bool, trust_remote_code: bool, allow_pickle: bool) -> None:
        """Predict with a trained adapter (a run's output.dir or its adapter/ folder) on every row
        of --input, through a Ray Data actor pool (or in-process with --local); write the rows plus
        the predictions to --output."""
        try:
            done = run_predict(adapter_or_run, input_path, local_output(output_path), batch_size, num_actors,
                               ray_address or old_address, local=local,
                               trust=Trust(trust_remote_code, allow_pickle), overwrite=overwrite)
        except JobError as e:
            fail(e)
        if done["truncated"]:
            from peft_ray.inference import truncation_note

            click.echo(truncation_note(done["truncated"], done["max_length"]) + " (column `input_truncated`)",
                       err=True)
        click.echo(f"wrote {done['rows']} rows to {done['output']} ({done['null']} without a prediction)")


def run_predict(adapter_or_run: str, input_path: str, output: Path, batch_size: Optional[int],
                num_actors: int, address: Optional[str], local: bool = False, trust: Trust = Trust(),
                overwrite: bool = False) -> Dict:
    """Check everything on the driver (no weights loaded), then stream the input through the actors
    (or, `local`, through one Predictor in this process)."""
    from peft_ray.data.sources import check_plain_files, resolve_files
    from peft_ray.inference import (check_adapter, check_columns, count_rows, find_adapter_dir, ray_session,
                                    with_progress)
    from peft_ray.tasks.pipeline import input_columns
    from peft_ray.train.terminal import ray_routed

    adapter_dir = find_adapter_dir(adapter_or_run)
    spec = check_adapter(adapter_dir, trust).spec
    files = resolve_files(None, input_path, "--input")
    check_output(output, files, overwrite)
    check_columns(files, input_columns(spec), "--input", spec)
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


def ray_predictions(files: List[str], adapter_dir: Path, batch_size: int, num_actors: int,
                    address: Optional[str], trust: Trust = Trust()):
    """Through the Ray that run_predict's ray_session started or joined."""
    import ray

    joined = bool(address or os.environ.get("RAY_ADDRESS"))
    check_actors(num_actors, ray.cluster_resources().get("CPU", 0), "the Ray cluster")
    ds = predictions(files, str(adapter_dir), batch_size, num_actors, trust, restarts=joined)
    return ds.iter_batches(batch_format="pyarrow", batch_size=None)


def local_predictions(files: List[str], adapter_dir: Path, batch_size: int,
                      trust: Trust = Trust()) -> Iterator["pa.Table"]:
    """The same Predictor the actors hold, called in this process on pyarrow-read chunks, in order."""
    import pyarrow as pa

    from peft_ray.data.sources import iter_arrow

    predictor = Predictor(str(adapter_dir), batch_size, trust)
    for batch in iter_arrow(files, batch_size=ROWS_PER_CALL):
        yield predictor(pa.Table.from_batches([batch]))


def check_actors(num_actors: int, cpus: float, where: str) -> None:
    if num_actors > cpus:
        raise JobError(f"--num-actors {num_actors} needs {num_actors} CPUs (one per actor) but {where} has "
                       f"{cpus:g}; lower --num-actors")


def check_actors_fit_here(num_actors: int, address: Optional[str]) -> None:
    """Before Ray starts: the in-process Ray this command would start has this machine's CPUs plus
    the data slots `train` adds (ray_start.init_ray); a cluster to join is checked once joined."""
    import os
    import sys

    from peft_ray.train.fit import DATA_CPU_SLOTS

    ray = sys.modules.get("ray")
    if address or os.environ.get("RAY_ADDRESS") or (ray is not None and ray.is_initialized()):
        return
    check_actors(num_actors, (os.cpu_count() or 1) + DATA_CPU_SLOTS, "the in-process Ray on this machine")


def check_output(output: Path, inputs: List[str], overwrite: bool = False) -> None:
    if output.suffix.lower() not in FORMATS:
        raise DataError(f"--output '{output}': extension '{output.suffix}' is not supported; use .parquet, "
                        ".jsonl or .json (JSON Lines), or .csv")
    if output.resolve() in {Path(f).resolve() for f in inputs}:
        raise DataError(f"--output '{output}' is also an input file; write the predictions somewhere else")
    if output.is_dir():
        raise DataError(f"--output '{output}' is a folder; name the file to write, e.g. {output / 'preds.jsonl'}")
    check_output_file(str(output), overwrite)   # not there unless --overwrite, a writable folder: before the model loads


def predictions(files: List[str], adapter_dir: str, batch_size: int, num_actors: int, trust: Trust = Trust(),
                restarts: bool = True):
    """The lazy pipeline: read -> Predictor actors. Output order = input order (preserve_order).
    `restarts`: Ray Data's actor fault tolerance (a lost node's actor comes back), for a cluster.
    The in-process Ray has no node to lose, and with restarts on, Ray's core worker printed an
    error-level line about the actors' constructor arguments on every successful run."""
    import ray.data

    from peft_ray.data.sources import ray_dataset

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False           # the driver shows one bar over rows instead
    # Streaming split of big blocks (a one-row-group Parquet file is one block) so every actor gets
    # work. Ray 2.60: a fixed actor pool is `compute=ActorPoolStrategy(size=N)` (`concurrency=` is deprecated).
    return ray_dataset(files).repartition(target_num_rows_per_block=ROWS_PER_CALL).map_batches(
        Predictor, fn_constructor_kwargs={"adapter_dir": adapter_dir, "batch_size": batch_size, "trust": trust},
        batch_format="pyarrow", batch_size=ROWS_PER_CALL, compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=1, udf_modifying_row_count=False, **({} if restarts else {"max_restarts": 0}))


class Predictor:
    """The map_batches UDF: one per actor, holding the model; input rows in, the same rows
    plus the prediction columns out."""

    def __init__(self, adapter_dir: str, batch_size: int, trust: Trust = Trust()):
        import pyarrow as pa

        from peft_ray.inference import load_adapter, predict_config
        from peft_ray.tasks import get_task
        from peft_ray.tasks.pipeline import input_columns

        self.loaded = load_adapter(Path(adapter_dir), trust=trust)
        self.task = get_task(self.loaded.spec.task.type)
        self.cfg = predict_config(self.loaded)
        self.runtime = self.task.runtime(self.loaded.spec, self.loaded.base_path)
        self.columns = input_columns(self.loaded.spec)
        self.fields = self.task.predict_fields(self.cfg.task)   # fixed types: an all-null batch keeps the schema
        self.batch_size = batch_size
        # whether the row was cut to model.max_length (its prediction may be empty or wrong); null where dropped
        self.cut = pa.field("input_truncated", pa.bool_())   # not "truncated": a common column name of inputs

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa
        import torch

        from peft_ray.data.batching import collate

        rows = batch.select(self.columns).to_pylist()
        encoded = [encode_row(row, self.cfg, self.task.placeholders) for row in rows]
        out: Dict[str, list] = {f.name: [None] * batch.num_rows for f in self.fields}
        # what the model answered from (Task.input_cut): for generation the prompt decoding continued
        out[self.cut.name] = [None if e is None else bool(e.get(self.task.input_cut)) for e in encoded]
        for idx in length_chunks(encoded, self.batch_size):
            micro = collate([encoded[i] for i in idx], self.loaded.pad_id)
            with torch.no_grad():
                result = self.task.predict(self.loaded.engine, micro, self.runtime)
            for name, values in result.items():
                for i, v in zip(idx, values):
                    out[name][i] = v
        fields = [*self.fields, self.cut]
        batch = batch.drop_columns([f.name for f in fields if f.name in batch.column_names])
        for f in fields:
            batch = batch.append_column(f, pa.array(out[f.name], type=f.type))
        return batch


def encode_row(row: dict, cfg, placeholders) -> Optional[dict]:
    """The row as the task's preprocessing makes it, or None where it drops the row. Each row
    is preprocessed on its own, so a dropped row is known by its position. `placeholders(row,
    cfg.task)` fills the supervision columns preprocessing requires and prediction never reads."""
    import pyarrow as pa

    from peft_ray.data.preprocess import preprocess

    table = pa.Table.from_pylist([{**row, **placeholders(row, cfg.task)}])
    try:
        out = preprocess(table, cfg)
    except DataError:               # a malformed row (e.g. tokens that are not a list): no prediction
        return None
    return out.to_pylist()[0] if out.num_rows else None


def length_chunks(encoded: List[Optional[dict]], size: int) -> Iterator[List[int]]:
    """Positions of the usable rows, shortest first, in chunks of `size` (less padding)."""
    usable = sorted((i for i, e in enumerate(encoded) if e is not None), key=lambda i: len(encoded[i]["input_ids"]))
    for s in range(0, len(usable), size):
        yield usable[s:s + size]


@contextlib.contextmanager
def open_sink(path: Path):
    """write(table) appends to a hidden sibling that becomes `path` only when every row is in."""
    from peft_ray.storage import exclusive_temp

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = exclusive_temp(path, ".partial")            # random name, O_EXCL|O_NOFOLLOW: no planted link
    sink = {"parquet": ParquetSink, "jsonl": JsonLinesSink, "csv": CsvSink}[FORMATS[path.suffix.lower()]](tmp)
    try:
        yield sink.write
        sink.close()
        tmp.replace(path)
    except BaseException:
        sink.close()
        tmp.unlink(missing_ok=True)
        raise


class ParquetSink:
    def __init__(self, path: Path):
        self.path, self.writer = path, None

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(str(self.path), table.schema)
        elif table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)   # e.g. a column inferred as null in one JSON block
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class JsonLinesSink:
    def __init__(self, path: Path):
        self.file = open(path, "w", encoding="utf-8")

    def write(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            self.file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        self.file.close()


class CsvSink:
    """A spreadsheet's view of the rows: a struct column becomes one column per field
    (`scores.positive`), a list, map or binary value one JSON text cell, and every cell text, so
    a column whose type differs between input files (int in one shard, float in another) writes
    as it reads."""

    def __init__(self, path: Path):
        self.path, self.writer, self.names = path, None, None

    def write(self, table: pa.Table) -> None:
        import pyarrow.csv as pcsv

        table = flat_for_csv(table)
        if self.writer is None:
            self.writer, self.names = pcsv.CSVWriter(str(self.path), table.schema), table.column_names
        elif table.column_names != self.names:
            raise DataError(f"--output: the input files' columns differ "
                            f"({self.names} then {table.column_names}); a CSV has one header. "
                            "Predict each file on its own, or write .jsonl")
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def flat_for_csv(table: pa.Table) -> pa.Table:
    """Structs flattened (`scores.positive`; the prediction's columns win over an input column of
    the same name, as in the other formats), every other value as text: strings as they are,
    numbers and times as Arrow prints them, nested and binary values as JSON text."""
    import pyarrow as pa

    from peft_ray.data.columns import decoded

    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    names = table.column_names
    keep = [i for i, n in enumerate(names) if n not in names[i + 1:]]   # the last of a repeated name
    cols = []
    for i in keep:
        f, col = table.schema.field(i), table.column(i)
        col = decoded(col)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            cols.append(col.cast(pa.string()))
            continue
        try:
            if not _plain_scalar(col.type):
                raise pa.ArrowNotImplementedError("nested")
            cols.append(col.cast(pa.string()))
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            binary = pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) or \
                pa.types.is_fixed_size_binary(col.type)
            text = _jsonable if binary else (lambda v: json.dumps(_jsonable(v), ensure_ascii=False, default=str))
            cols.append(pa.array([None if v is None else text(v) for v in col.to_pylist()], type=pa.string()))
    return pa.table(cols, names=[names[i] for i in keep])


def _plain_scalar(t) -> bool:
    import pyarrow as pa

    return (pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
            or pa.types.is_temporal(t) or pa.types.is_null(t))


def _jsonable(v):
    """bytes as text where they are UTF-8, else as hex; lists and dicts through."""
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(v).hex()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v
