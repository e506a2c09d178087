"""Batch prediction with a trained adapter: the Ray Data pipeline (input rows stream through
`map_batches` into a fixed pool of actors, each holding the model once: `Predictor`) and the same
Predictor called in this process (`--local`). Output rows are the input rows, in input order, plus
the task's prediction columns; a row the task cannot use (e.g. empty text) gets nulls there
instead of being dropped. `peft-ray predict` (commands/predict.py) drives it and writes the rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pyarrow as pa

from peft_ray.errors import DataError, JobError
from peft_ray.security import Trust

ROWS_PER_CALL = 256          # rows per actor call: the unit of streaming and of length grouping


def ray_predictions(files: List[str], adapter_dir: Path, batch_size: int, num_actors: int,
                    address: Optional[str], trust: Trust = Trust()):
    """Through the Ray that the caller's inference.ray_session started or joined."""
    import ray

    joined = bool(address or os.environ.get("RAY_ADDRESS"))
    check_actors(num_actors, ray.cluster_resources().get("CPU", 0), "the Ray cluster")
    ds = predictions(files, str(adapter_dir), batch_size, num_actors, trust, restarts=joined)
    return ds.iter_batches(batch_format="pyarrow", batch_size=None)


def local_predictions(files: List[str], adapter_dir: Path, batch_size: int,
                      trust: Trust = Trust()) -> Iterator["pa.Table"]:
    """The same Predictor the actors hold, called in this process on pyarrow-read chunks, in order."""
    from peft_ray.data.sources import iter_arrow

    predictor = Predictor(str(adapter_dir), batch_size, trust)
    for batch in iter_arrow(files, batch_size=ROWS_PER_CALL, csv_as_text=True):   # rows pass on as written
        yield predictor(pa.Table.from_batches([batch]))


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
    return ray_dataset(files, csv_as_text=True).repartition(target_num_rows_per_block=ROWS_PER_CALL).map_batches(
        Predictor, fn_constructor_kwargs={"adapter_dir": adapter_dir, "batch_size": batch_size, "trust": trust},
        batch_format="pyarrow", batch_size=ROWS_PER_CALL, compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=1, udf_modifying_row_count=False, **({} if restarts else {"max_restarts": 0}))


class Predictor:
    """The map_batches UDF: one per actor, holding the model; input rows in, the same rows
    plus the prediction columns out."""

    def __init__(self, adapter_dir: str, batch_size: int, trust: Trust = Trust()):
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


def check_actors(num_actors: int, cpus: float, where: str) -> None:
    if num_actors > cpus:
        raise JobError(f"--num-actors {num_actors} needs {num_actors} CPUs (one per actor) but {where} has "
                       f"{cpus:g}; lower --num-actors")


def check_actors_fit_here(num_actors: int, address: Optional[str]) -> None:
    """Before Ray starts: the in-process Ray this command would start has this machine's CPUs plus
    the data slots `train` adds (ray_start.init_ray); a cluster to join is checked once joined."""
    import sys

    from peft_ray.train.fit import DATA_CPU_SLOTS

    ray = sys.modules.get("ray")
    if address or os.environ.get("RAY_ADDRESS") or (ray is not None and ray.is_initialized()):
        return
    check_actors(num_actors, (os.cpu_count() or 1) + DATA_CPU_SLOTS, "the in-process Ray on this machine")
