"""A trained adapter, ready for inference: what `peft-ray eval` and `peft-ray predict` share.

An adapter folder written by `peft-ray train` records its whole job in peft_ray.json, so
the base model, method, task, template and labels all come from there: loading needs
only the path of the run (its output.dir) or of the adapter folder itself.
"""

from __future__ import annotations

import contextlib

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, List, Optional

import pyarrow as pa
import torch

from peft_ray.adapter import CONFIG, EXTRA, WEIGHTS
from peft_ray.cpu_attention import use_cpu_attention
from peft_ray.methods.cpu_linear import use_cpu_linear
from peft_ray.errors import CheckpointError, DataError, JobError
from peft_ray.security import Trust

class InferenceEngine(torch.nn.Module):
    """A model on a device, in eval mode: what the tasks' model side needs (a forward and
    `.device`, as DeepSpeed's engine has). tasks/evaluate.eval_scope restores the mode it
    found, so it stays in eval mode; nothing here pretends to train."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__()
        self.module = model              # the name DeepSpeed uses; lm_common.base_config looks for it
        self.device = device
        self.module.to(device)
        if device.type == "cpu":         # zero-shot and the tune pre-screen load a bare base model
            use_cpu_attention(self.module)
            use_cpu_linear(self.module)
        self.eval()

    def forward(self, **kw):
        return self.module(**kw)


@dataclass
class LoadedAdapter:
    adapter_dir: Path
    spec: object                         # the run's validated JobSpec
    engine: Optional[InferenceEngine]    # None after check_adapter (nothing loaded)
    tokenizer: object
    base_path: str

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0


def find_adapter_dir(path: str, arg: str = "ADAPTER_OR_RUN") -> Path:
    """A run's output.dir (uses its adapter/), an adapter folder, or a checkpoint folder (its adapter/)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{arg} '{path}' does not exist; pass a run's output.dir (e.g. runs/default) "
                              "or its adapter/ folder")
    for candidate in (p, p / "adapter"):
        if (candidate / CONFIG).is_file() and (candidate / WEIGHTS).is_file():
            return candidate
    raise CheckpointError(f"{arg} '{path}': no adapter ({CONFIG} + {WEIGHTS}) in it or in its adapter/; "
                          + what_instead(p))


def what_instead(p: Path) -> str:
    """The hint for a folder without an adapter: its newest checkpoint (a run stopped before it wrote
    adapter/), a merged model, or the kinds of folder that hold one."""
    from peft_ray.train.checkpoint import latest_good_checkpoint

    if p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors")):
        return ("it is a full model (an `export --merge`?), which transformers loads itself "
                "(AutoModel*.from_pretrained); pass the adapter it was merged from")
    if (p / "trial.json").is_file():    # tune/report.TRIAL_FILE: a trial of a search, which writes no adapter/
        roots = (p / "checkpoints", p)                # a 1-worker trial's, a Ray Train trial's
        newest = next((c for c in (latest_good_checkpoint(r, warn=lambda _: None) for r in roots if r.is_dir())
                       if c is not None), None)
        keeps = f"; its newest is {newest}" if newest is not None else ""
        return (f"it is a trial of `peft-ray tune`, which keeps adapters in its checkpoints only{keeps}. Pass a "
                f"checkpoint folder, or the search's output.dir ({p.parent.parent}) for the best trial's adapter")
    for root in (p / "checkpoints", p / "ray"):     # --local's and Ray's checkpoints of a run
        newest = latest_good_checkpoint(root, warn=lambda _: None) if root.is_dir() else None
        if newest is not None:
            return (f"the run stopped before it wrote adapter/; its newest checkpoint is {newest}: pass that "
                    "folder, or continue the run with `peft-ray train JOB --resume`")
    return ("pass a run's output.dir, a checkpoint folder (checkpoints/checkpoint_* or ray/.../checkpoint_*) or "
            "an adapter folder written by `peft-ray train`")


def apply_trust(spec, trust: Trust, where: Path):
    """The recorded job with model.trust_remote_code/allow_pickle set from `trust` only, and
    a hub id replaced by its locally cached folder (a shared adapter never downloads)."""
    asked = {"trust_remote_code": (spec.model.trust_remote_code, trust.remote_code, "--trust-remote-code"),
             "allow_pickle": (spec.model.allow_pickle, trust.pickle, "--allow-pickle")}
    for field, (recorded, allowed, flag) in asked.items():
        if recorded and not allowed:
            raise CheckpointError(f"{where}: the recorded job sets model.{field}: true, which can run code from "
                                  f"'{spec.model.name_or_path}'; peft-ray never turns that on from a file it "
                                  f"reads. Pass {flag} if you trust this adapter and its base model")
        # the flag alone allows pickle weights: a colleague's copy of the base may have only those;
        # remote code only where the recorded run used it (the flag's help: "as recorded")
        setattr(spec.model, field, allowed if field == "allow_pickle" else allowed and recorded)
    spec.model.name_or_path = cached_model(spec.model.name_or_path, where, given=bool(trust.base_model))
    return spec


def cached_model(name: str, where: Path, given: bool = False) -> str:
    """A local folder, an alias, or a hub id's snapshot in the local HF cache (never fetched).
    `given`: the name came from --base-model, not from the recorded job."""
    from peft_ray.models import model_kind

    if model_kind(name) != "hub":
        return name
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:                    # LocalEntryNotFoundError, a malformed id, ...
        if given:
            raise CheckpointError(f"--base-model '{name}' is neither a folder nor in the local Hugging Face "
                                  f"cache, and peft-ray never downloads; fetch it yourself "
                                  f"(hf download {name}) or name a folder") from None
        raise CheckpointError(f"{where}: the recorded base model '{name}' is not in the local Hugging Face "
                              f"cache, and a recorded job never downloads; fetch it yourself if you trust it "
                              f"(hf download {name}), or pass --base-model PATH (a copy of it "
                              "here)") from None


def read_run_spec(adapter_dir: Path, trust: Trust = Trust()):
    """(adapter tensors, the run's JobSpec) from an adapter folder, with `trust` applied."""
    from peft_ray.adapter import read_adapter
    from peft_ray.spec import validate_spec

    state, _, extra = read_adapter(adapter_dir)
    if "spec" not in extra:
        raise CheckpointError(f"{adapter_dir / EXTRA}: missing, or without the job ('spec'); eval and predict "
                              "need an adapter written by `peft-ray train` (a foreign HF PEFT adapter can "
                              "start a job instead: method.init_from)")
    try:
        spec = validate_spec(extra["spec"])
    except JobError as e:
        raise CheckpointError(f"{adapter_dir / EXTRA}: the recorded job no longer validates: {e}") from None
    spec.method.init_from = None         # the adapter replaces any starting point
    # adapter_config names the hub id; load what training loaded, unless the user names their own copy
    local = None if trust.base_model else recorded_base_path(extra, adapter_dir)
    if trust.base_model:                  # the user's own copy of it, named on the command line
        spec.model.name_or_path = trust.base_model
    elif local and Path(local).is_dir():
        spec.model.name_or_path = local
    spec = apply_trust(spec, trust, adapter_dir / EXTRA)
    check_chat_template(spec, adapter_dir / EXTRA)
    return state, spec


def recorded_base_path(extra: dict, adapter_dir: Path) -> Optional[str]:
    """peft_ray.json's base_model_path (where training loaded the base from), checked as data: a path
    the file system can hold, else the adapter's file is named."""
    from peft_ray.storage.paths import fits_filesystem

    local = extra.get("base_model_path")
    if local is None:
        return None
    try:
        if not isinstance(local, str):
            raise ValueError(f"a JSON {type(local).__name__}, not a path")
        return fits_filesystem(local)
    except ValueError as e:
        raise CheckpointError(f"{adapter_dir / EXTRA}: base_model_path is {e}; copy the adapter folder again, "
                              "or pass --base-model PATH") from None


def check_chat_template(spec, where: Path) -> None:
    """A recorded chat job's base-model chat template renders within `validate`'s limits (time and
    size, in a child killed past them) before any row is rendered: the model folder an adapter names
    is a file users exchange, and a nested loop in its template hung predict for ever."""
    if not spec.template.chat:
        return
    from peft_ray.models import resolve_model_path
    from peft_ray.preflight.model import check_chat_renders
    from peft_ray.rows.tokens import tokenizer

    try:
        tok = tokenizer(resolve_model_path(spec.model.name_or_path), spec.model.trust_remote_code)
        if getattr(tok, "chat_template", None):
            check_chat_renders(tok, spec)
    except JobError as e:              # SpecError from the rendering check, a missing model folder
        raise CheckpointError(f"{where}: {e}") from None


def check_adapter(adapter_dir: Path, trust: Trust = Trust()) -> LoadedAdapter:
    """Everything load_adapter checks that needs no weights: the job, the task, the base model path."""
    from peft_ray.models import load_tokenizer

    _, spec = read_run_spec(adapter_dir, trust)
    path = check_base(spec, adapter_dir, trust)
    return LoadedAdapter(adapter_dir, spec, None, load_tokenizer(path, spec.model.trust_remote_code), path)


def check_base(spec, adapter_dir: Path, trust: Trust) -> str:
    """The recorded (or --base-model) base model's folder and its weights' kind, before any model or
    actor loads it: its resolved path."""
    from peft_ray.models import check_model_folder, resolve_model_path

    try:
        path = resolve_model_path(spec.model.name_or_path)
        check_model_folder(path, spec.model.allow_pickle)
    except JobError as e:
        if trust.base_model:   # the user's own path: said as theirs, not as the adapter's file
            raise CheckpointError(f"--base-model: {str(e).removeprefix('model.name_or_path: ')}") from None
        raise CheckpointError(f"{adapter_dir / EXTRA}: {e}; where this machine has its own copy of the base "
                              "model, pass --base-model PATH") from None
    return path


def load_adapter(adapter_dir: Path, device: Optional[str] = None, trust: Trust = Trust(),
                 record: Optional[tuple] = None) -> LoadedAdapter:
    """The frozen base model with the adapter's weights, in eval mode, on `device` (cuda if available).
    `record`: what read_run_spec(adapter_dir, trust) returned, where the caller read it already (its
    checks, a chat template's rendering in a child among them, then run once)."""
    from peft_ray.train.engine import build_model

    state, spec = record or read_run_spec(adapter_dir, trust)
    check_base(spec, adapter_dir, trust)
    try:
        model, tokenizer, path = build_model(spec)
        model.load_adapter_state(state, str(adapter_dir))
    except (JobError, ValueError, KeyError) as e:
        raise CheckpointError(f"{adapter_dir}: cannot load this adapter onto its base model "
                              f"'{spec.model.name_or_path}': {e}") from None
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return LoadedAdapter(adapter_dir, spec, InferenceEngine(model, dev), tokenizer, path)


def check_columns(files: List[str], columns: List[str], arg: str, spec, every_column: bool = False,
                  csv_as_text: bool = False) -> pa.Schema:
    """The first file's schema, after checking that every file has `columns` (text where the template
    renders them, as training's pre-flight checks) of one type across the files; `every_column`: all the
    first file's columns too (predict's Ray Data reads and writes them all as one table). `csv_as_text`:
    CSV columns judged as text, as predict reads them (a column of digits is text there)."""
    from peft_ray.data.sources import read_schema

    from peft_ray.preflight.columns import check_files_agree

    schema = read_schema(files, csv_as_text=csv_as_text)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        from peft_ray.preflight.columns import suggest_column

        which = f"column '{missing[0]}'" if len(missing) == 1 else f"columns {missing}"
        raise DataError(f"{arg} '{files[0]}' has no {which}{suggest_column(missing[0], schema.names)}, which the "
                        f"run reads (its template is '{spec.template.text}', task {spec.task.type}); its columns "
                        f"are {schema.names}")
    check_files_agree(files, spec, arg, read=list(columns),
                      same_type=list(schema.names) if every_column else None, option=arg, csv_as_text=csv_as_text)
    return schema


@contextlib.contextmanager
def ray_session(spec, address: Optional[str]) -> Iterator[None]:
    """Join `address` (or RAY_ADDRESS), or start Ray in-process, as `peft-ray train` does
    (never the cluster the run trained on: its address may be long gone), and shut it down
    when the block ends. Inside the caller's routed output, like train's: the lines Ray prints
    while it stops (the GCS's notes on the actors it killed) go to the log, not after the result."""
    import ray

    from peft_ray.train.ray_start import init_ray

    local = spec.model_copy(deep=True)
    local.scaling.num_workers, local.scaling.cpus_per_worker, local.scaling.address = 1, 1, address
    started = init_ray(local, source="--ray-address" if address else None)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def with_progress(tables: Iterable[pa.Table], total: Optional[int], desc: str) -> Iterator[pa.Table]:
    """A tqdm bar over rows on stderr while the tables stream through (a terminal only: elsewhere
    its redraws are noise in a log)."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=" rows", file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
              disable=None) as bar:
        for t in tables:
            bar.update(t.num_rows)
            yield t
        if bar.total is not None and bar.n < bar.total:   # rows the task skipped (empty text, no label)
            bar.total = bar.n
            bar.refresh()


def count_rows(files: List[str]) -> Optional[int]:
    """Rows in Parquet files from their footers (no data read); None for other formats."""
    import pyarrow.parquet as pq

    if not all(f.endswith(".parquet") for f in files):
        return None
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def predict_config(loaded: LoadedAdapter):
    """The run's preprocessing for single rows, with no hold-out filter."""
    from peft_ray.tasks.pipeline import make_preprocess_config

    cfg = make_preprocess_config(loaded.spec, loaded.base_path, "validation")
    return replace(cfg, holdout_fraction=0.0, holdout_side="")
