"""`peft-ray eval ADAPTER_OR_RUN --data FILE_OR_DIR`: score a trained adapter on labelled data.

The data streams through the run's own Ray Data pipeline (read -> the task's preprocessing
in `map_batches`), and the driver runs the task's evaluation on the stream: the same
metrics, in the same way, as the evaluation at the end of `peft-ray train`.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from peft_ray.commands.options import (check_output_file, fail, local_option, overwrite_option,
                                       ray_address_option)
from peft_ray.errors import DataError, JobError
from peft_ray.security import Trust, trust_flags
from peft_ray.storage import check_output_dir, write_file

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
    @overwrite_option("--output")
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
        try:
            metrics, out = run_eval(adapter_or_run, data, split, output, batch_size, ray_address or old_address,
                                    local=local, trust=Trust(trust_remote_code, allow_pickle, base_model), overwrite=overwrite)
        except JobError as e:
            fail(e)
        click.echo("\n" + render_metrics(metrics, f"peft-ray eval: {metrics['task']} on {metrics['split']}"))
        click.echo(f"wrote {out}")


def _split_name(ctx, param, value: Optional[str]) -> Optional[str]:
    """--split becomes part of a file name (eval_<split>.json): a plain name, never a path."""
    if value is not None and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value) or ".." in value):
        raise click.BadParameter(f"'{value}' is not a split name: use letters, digits, '_', '-' or '.' "
                                 "(e.g. validation, train, test); --output names the metrics file")
    return value


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


def run_eval(adapter_or_run: str, data: str, split: Optional[str], output: Optional[str], batch_size: Optional[int],
             address: Optional[str], local: bool = False, trust: Trust = Trust(),
             overwrite: bool = False) -> Tuple[Dict[str, Any], Path]:
    """`local`: pyarrow reading + in-process preprocessing (train --local's iterator), no Ray."""
    from peft_ray.inference import (check_columns, count_rows, find_adapter_dir, load_adapter, ray_session,
                                    read_run_spec, truncation_note, with_progress)
    from peft_ray.preflight import scan_split
    from peft_ray.tasks import get_task
    from peft_ray.tasks.pipeline import needed_columns
    from peft_ray.train.terminal import ray_routed

    t0 = time.time()
    split = split_of(data, split)
    adapter_dir = find_adapter_dir(adapter_or_run)
    record = read_run_spec(adapter_dir, trust)
    files, holdout = eval_files(record[1], data, split)   # errors before the model loads
    if output:
        out = check_output_file(output, overwrite)
    else:
        out = default_output(adapter_dir, split)
        check_output_dir(str(out.parent), "--output's folder")
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
    if cut[0]:
        click.echo(truncation_note(cut[0], spec.model.max_length), err=True)
    result = {**metrics, "task": spec.task.type, "split": split, "data": files, "skipped_rows": facts.skipped,
              "truncated_rows": cut[0], "adapter": str(loaded.adapter_dir), "wall_seconds": time.time() - t0}
    write_file(out, json.dumps(result, indent=2))   # never through a link planted in the run folder
    return result, out


def counted_cuts(tables, column: str, cut: List[int]):
    """The preprocessed tables, passed on, with their rows whose input was cut to model.max_length
    (`column`: the task's input_cut) added to cut[0]."""
    for t in tables:
        if column in t.column_names:
            cut[0] += t[column].to_pylist().count(True)
        yield t


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


def render_metrics(metrics: Dict[str, Any], title: str) -> str:
    """The task's headline metrics first, then the other numbers, one per line."""
    from peft_ray.tasks import get_task

    head = [k for k in get_task(metrics["task"]).headline if k in metrics]
    rest = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and k not in head)
    rows = [(k, f"{metrics[k]:.4f}" if isinstance(metrics[k], float) else str(metrics[k])) for k in head + rest]
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * min(79, max(len(title), width + 2 + max(len(v) for _, v in rows)))]
    return "\n".join(lines + [f"{k:<{width}}  {v}" for k, v in rows])
