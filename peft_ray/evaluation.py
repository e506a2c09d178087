"""`peft-ray eval`'s work: score a trained adapter on labelled data and write the metrics JSON.

The data streams through the run's own Ray Data pipeline (read -> the task's preprocessing in
`map_batches`), or with `local` through `train --local`'s in-process iterator, and the driver runs
the task's evaluation on the stream: the same metrics, in the same way, as the evaluation at the
end of `peft-ray train`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from peft_ray.errors import DataError, JobError
from peft_ray.security import Trust
from peft_ray.storage import check_output_dir, write_file


def split_of(data: str, split: Optional[str]) -> str:
    """The split a data folder (or builtin:NAME) is scored on, validation by default; for a file, the
    name its metrics go under: the file's own unless given, so scoring test.parquet never replaces
    the run's eval_validation.json."""
    from peft_ray.data.sources import BUILTIN_PREFIX

    if split is not None:
        return split
    if data.startswith(BUILTIN_PREFIX) or Path(data).is_dir():
        return "validation"
    name = Path(data).name.split(".", 1)[0]          # test.parquet, test-*.jsonl.gz -> test, test-_
    return re.sub(r"[^A-Za-z0-9_-]", "_", name).strip("_-")[:64] or "data"


def default_output(adapter_dir: Path, split: str) -> Path:
    """eval's own file: a run's adapter/ gets eval_<split>.json in the run folder, a checkpoint's
    eval_<checkpoint>_<split>.json there too (never inside the checkpoint: a file its manifest does not
    list fails its check, and --resume would pass it over); an adapter folder of its own (an export)
    gets eval_<name>_<split>.json beside it, so two exports side by side keep their own."""
    adapter_dir = adapter_dir.resolve()            # `eval .` and `eval ../x` name the same folder alike
    owner = adapter_dir.parent
    if adapter_dir.name == "adapter" and (owner / "job.yaml").is_file():
        return owner / f"eval_{split}.json"
    if adapter_dir.name == "adapter" and (owner / "trainer_state.json").is_file():
        # checkpoints/checkpoint_N (--local) or ray/<experiment>/checkpoint_<time> (Ray) of a run
        run = next((up for up in owner.parents[:3] if (up / "job.yaml").is_file()), owner.parent)
        return run / f"eval_{owner.name}_{split}.json"
    return owner / f"eval_{adapter_dir.name}_{split}.json"


@dataclass
class Evaluated:
    metrics: Dict[str, Any]          # what the JSON holds: the task's metrics and where they came from
    out: Path                        # the JSON written
    note: Optional[str] = None       # rows cut at model.max_length, said on stderr


def run_eval(adapter_or_run: str, data: str, split: Optional[str], output: Optional[Path], batch_size: Optional[int],
             address: Optional[str], local: bool = False, trust: Trust = Trust(), overwrite: bool = False) -> Evaluated:
    """Score an adapter on labelled rows and write the metrics JSON. `output`: the file, already
    checked by the command (check_output_file), else default_output (check_default_output).
    `local`: pyarrow reading + in-process preprocessing (train --local's iterator), no Ray."""
    from peft_ray.inference import (check_columns, count_rows, find_adapter_dir, load_adapter, ray_session,
                                    read_run_spec, with_progress)
    from peft_ray.preflight.scan import scan_split
    from peft_ray.summary import truncation_note
    from peft_ray.tasks import get_task
    from peft_ray.tasks.evaluate import counted_cuts
    from peft_ray.tasks.pipeline import needed_columns
    from peft_ray.train.terminal import ray_routed

    t0 = time.time()
    split = split_of(data, split)
    adapter_dir = find_adapter_dir(adapter_or_run)
    record = read_run_spec(adapter_dir, trust)
    files, holdout = eval_files(record[1], data, split)   # errors before the model loads
    out = output or default_output(adapter_dir, split)
    if output is None:
        check_output_dir(str(out.parent), "--output's folder")
        check_default_output(out, adapter_dir, files, split, overwrite)
    loaded = load_adapter(adapter_dir, trust=trust, record=record)
    spec = loaded.spec
    check_columns(files, needed_columns(spec), "--data", spec)
    if not holdout:
        spec.data.validation_fraction = 0.0          # score every row of a file given directly
    spec.data.train_shots = None                     # the job's K rows a class picked what it trained on,
                                                     # not a split: `--split train` scores every train row
    # Unknown labels, empty files: named now, before Ray starts (it buried them in a UserCodeException).
    facts = scan_split(files, spec, "--data", "validation" if holdout else "")
    if batch_size:
        spec.train.eval_batch_size = batch_size
    out.parent.mkdir(parents=True, exist_ok=True)
    total = None if holdout else count_rows(files)
    task = get_task(spec.task.type)
    with ray_routed(None if local else out.with_suffix(".log")), \
            (contextlib.nullcontext() if local else ray_session(spec, address)):   # Ray's own lines: next to the metrics
        tables = (stream_local(spec, loaded.base_path, files, split) if local
                  else stream(spec, loaded.base_path, files, split))
        cut = [0]
        metrics = task.evaluate(loaded.engine, counted_cuts(with_progress(tables, total, "eval"), task.input_cut, cut),
                                task.runtime(spec, loaded.base_path), loaded.pad_id)
    result = {**metrics, "task": spec.task.type, "split": split, "data": [os.path.abspath(f) for f in files], "skipped_rows": facts.skipped,
              "truncated_rows": cut[0], "adapter": str(loaded.adapter_dir.resolve()), "wall_seconds": time.time() - t0}
    write_file(out, json.dumps(result, indent=2))   # never through a link planted in the run folder
    return Evaluated(result, out, truncation_note(cut[0], spec.model.max_length) if cut[0] else None)


def check_default_output(out: Path, adapter_dir: Path, files: List[str], split: str, overwrite: bool) -> None:
    """The default metrics file, before any work: its name fits the file system, and one already there
    is replaced only by a score of the same adapter on the same files and split (a re-evaluation), or
    with --overwrite. Two test.parquet files of two folders, or another data set scored as
    `validation`, would otherwise replace the first one's metrics without a word."""
    from peft_ray.storage import own_json, temp_name

    if len(temp_name(out.name).encode()) > 255:
        raise JobError(f"the metrics file's default name ({out.name[:48]}...) is longer than a file system "
                       "allows; pass --output FILE")
    if overwrite or not (out.exists() or out.is_symlink()):
        return
    old = own_json(out)
    same = (isinstance(old, dict) and old.get("split") == split and _same_files(old.get("data"), files)
            and _same_path(old.get("adapter"), adapter_dir))
    if not same:
        what = (f"the metrics of {_shown_files(old.get('data'))}" if isinstance(old, dict)
                else "a file that is not eval's metrics")
        raise JobError(f"{out} already holds {what}; pass --overwrite to replace it, or --output FILE to keep both")



def _same_files(recorded: Any, files: List[str]) -> bool:
    """The same files, however each command named them (the JSON records absolute paths)."""
    return (isinstance(recorded, list) and all(isinstance(f, str) for f in recorded)
            and [os.path.realpath(f) for f in recorded] == [os.path.realpath(f) for f in files])


def _same_path(recorded: Any, adapter_dir: Path) -> bool:
    return isinstance(recorded, str) and Path(recorded).resolve() == adapter_dir.resolve()


def _shown_files(data: Any) -> str:
    if not isinstance(data, list) or not data:
        return "other data"
    return f"{str(data[0])[:200]}{f' (+{len(data) - 1} more)' if len(data) > 1 else ''}"


def eval_files(spec, data: str, split: str) -> Tuple[List[str], bool]:
    """(files, whether the job's hold-out applies): a folder gives the job's own file for `split`."""
    from peft_ray.data.sources import BUILTIN_PREFIX, resolve_files

    if not (data.startswith(BUILTIN_PREFIX) or Path(data).is_dir()):
        return resolve_files(None, data, "--data"), False
    d = spec.data
    holdout = d.holds_out
    if split == "train":
        name = d.train
    elif split == "validation" and (d.validation or holdout):
        name = d.validation or d.train
    else:
        have = "train" if d.validation is None and not holdout else "train, validation"
        raise DataError(f"--split {split}: the run's job has no such split in a data folder (it has: {have}); "
                        "pass the file itself as --data to score it")
    if Path(name).is_absolute() or ".." in Path(name).parts:
        # A job that named its file by path (data.train: /data/x.parquet): its file of that name in
        # --data. Never the recorded path itself, which would read outside the folder given.
        name = Path(name).name
    return resolve_files(data, name, "--data", root_field="--data"), holdout


def stream(spec, base_path: str, files: List[str], split: str):
    """Preprocessed Arrow tables from the run's own Ray Data pipeline (read -> map_batches)."""
    import ray.data

    from peft_ray.train.driver import token_pipeline

    ray.data.DataContext.get_current().enable_progress_bars = False   # one bar over rows instead
    return token_pipeline(spec, base_path, files, split).iter_batches(batch_format="pyarrow", batch_size=None)


def stream_local(spec, base_path: str, files: List[str], split: str):
    """The same preprocessed tables without Ray, from the iterator `train --local` evaluates with."""
    from peft_ray.data.preprocess import preprocess
    from peft_ray.tasks.pipeline import make_preprocess_config, needed_columns
    from peft_ray.train.data_iter import LocalDataIterators

    cfg = make_preprocess_config(spec, base_path, split)
    return LocalDataIterators([], files, cfg, needed_columns(spec), preprocess=preprocess).eval_tables()
