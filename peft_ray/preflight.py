"""Everything `train` checks before any cluster work, shared with `validate`.

Reads only schemas, row counts and the label column (streamed with pyarrow);
the text itself stays on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pyarrow as pa

from peft_ray.data.columns import check_text_lengths, max_text_chars
from peft_ray.data.fewshot import keep_shots
from peft_ray.data.sources import iter_arrow, read_schema, resolve_files
from peft_ray.data.holdout import apply_holdout
from peft_ray.errors import DataError, SpecError, suggest
from peft_ray.methods import get_method
from peft_ray.methods.adapter_model import check_init_from
from peft_ray.methods.targets import check_method_modules
from peft_ray.models import check_model_folder, check_weights_match, lm_kind, resolve_model_path
from peft_ray.rows.labels import label_ids, label_kind
from peft_ray.spec.load import shown
from peft_ray.spec.schema import JobSpec
from peft_ray.tasks import get_task
from peft_ray.tasks.pipeline import column_fields, few_shot_thresholds, holdout_seed, needed_columns, shots_seed


@dataclass
class SplitFacts:
    files: List[str]
    rows: int = 0          # rows in the files
    usable: int = 0        # rows with text and label
    skipped: int = 0       # null/empty text or label
    label_counts: dict = field(default_factory=dict)
    label_kinds: dict = field(default_factory=dict)   # "name" | "id" -> (file, a value) where first seen
    first_skipped: str = ""   # where the first skipped row is and what it lacks, for the note


@dataclass
class Preflight:
    model_path: str
    train: Optional[SplitFacts]          # None only for run_preflight(training=False)
    validation: Optional[SplitFacts]
    steps_per_epoch: int
    total_steps: int
    data_files: Optional[dict] = None    # run_dir.data_fingerprints, made once where a run records them


def _to_text(col: str, kind: pa.DataType) -> str:
    """How to make such a column text in pandas: astype(str) on a list or struct writes its repr
    ("['great', 'movie']"), which would then train without a word (a new-user review)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"a list of words: df['{col}'] = df['{col}'].str.join(' ')"
    if pa.types.is_struct(kind):
        return f"a struct: pick its text field, df['{col}'] = df['{col}'].str['FIELD']"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return f"bytes: df['{col}'] = df['{col}'].str.decode('utf-8')"
    return f"e.g. pandas: df['{col}'] = df['{col}'].astype(str)"


def suggest_column(col: str, names: List[str]) -> str:
    """suggest(), where the near name is one a template can say: `{review text}` cannot be written (a
    field is a plain name), so a column named so was suggested and then refused as a field."""
    import difflib

    from peft_ray.templates import is_field_name

    near = difflib.get_close_matches(col, names, n=1, cutoff=0.6)
    if near and not is_field_name(near[0]):
        return (f" (the file has '{near[0]}', which a template field cannot name: fields are letters, digits and "
                f"_; rename the column in the file, e.g. pandas: df.rename(columns={{'{near[0]}': '{col}'}}))")
    return suggest(col, names)


def check_columns(schema: pa.Schema, spec: JobSpec, where: str, read: Optional[List[str]] = None,
                  path: Optional[str] = None) -> None:
    """The columns the command reads (`read`; default: every column training reads) are in the file,
    text where the template renders them, lists where the task reads lists."""
    names = schema.names
    for col, field_name in column_fields(spec).items():
        if read is not None and col not in read:
            continue
        if col not in names:
            raise DataError(f"{field_name}: column '{col}' is not in {where}{suggest_column(col, names)}; "
                            f"its columns are {names}")
        if field_name == "template.text" and not _is_text(schema.field(col).type):
            # Rendering would stringify it: bytes as "b'\\xff...'", numbers as digits the
            # template never asked for. Text must be text in the file itself.
            raise DataError(f"template.text: column '{col}' of {where} holds {schema.field(col).type}, "
                            "not text; the template renders text columns only. Store it as a string "
                            f"column ({_to_text(col, schema.field(col).type)}), or use another column")
    check_list_columns(schema, spec, where, path or where, read=read)


def check_files_agree(files: List[str], spec: JobSpec, field_name: str, read: Optional[List[str]] = None,
                      same_type: Optional[List[str]] = None, option: str = "", csv_as_text: bool = False) -> None:
    """Every file of a split, not only the first, passes check_columns, and the columns read (and
    `same_type`) have one type across the files. Ray Data reads a split's files as one table and
    stopped at a type it cannot merge (`label` int64 in one shard, string in the next) after the
    cluster had started, and a later shard without a column gave raw KeyErrors or null predictions.
    Parquet and Arrow files cost a footer read each, CSV and JSON Lines a first batch. `option`: the
    command-line option the files came from (eval's --data), named with each file. `csv_as_text`:
    CSV columns typed as text, as predict reads them (read_schema's)."""
    typed: Dict[str, Tuple[str, pa.DataType]] = {}
    for path in files:
        try:
            schema = read_schema([path], csv_as_text=csv_as_text)
        except DataError as e:
            raise DataError(f"{field_name}: {e}") from None
        check_columns(schema, spec, f"{option} '{path}'" if option else path, read, path)
        for col in (same_type or read or list(column_fields(spec))):
            if col not in schema.names or pa.types.is_null(schema.field(col).type):
                continue           # (a column all null in one file takes any type)
            first, t = typed.setdefault(col, (path, schema.field(col).type))
            if not _unify(t, schema.field(col).type):
                raise DataError(f"{field_name}: column '{col}' holds {t} in {first} but {schema.field(col).type} "
                                f"in {path}, which cannot be one column; a split's files are read as one table, so "
                                "store the column with one kind of value in every file (all numbers, or all text)")


def _unify(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether two files' types of a column can be one column: widths and encodings merge (int32 and
    int64, string and large_string, int and float), as Ray Data's reads merge them; int and text do not."""
    try:
        pa.unify_schemas([pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive")
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False


def check_list_columns(schema: pa.Schema, spec: JobSpec, where: str, path: str,
                       read: Optional[List[str]] = None) -> None:
    """The task's list columns (NER's words and tags) that the command reads (`read`: all) hold lists in
    the file `path`: a CSV cell is text, and `["EU", "rejects"]` there read as one 20-character word,
    or as one unknown tag."""
    for col, field_name in get_task(spec.task.type).list_columns(spec.task).items():
        if col not in schema.names or (read is not None and col not in read):
            continue
        t = schema.field(col).type
        if not (pa.types.is_null(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
                or pa.types.is_fixed_size_list(t)):
            fix = ("CSV cells cannot hold lists: store the data as Parquet or JSON Lines (a JSON array per row)"
                   if path.lower().endswith((".csv", ".tsv")) else
                   "store one list per row (Parquet list<string>, or a JSON array per row in JSON Lines)")
            raise DataError(f"{field_name}: column '{col}' of {where} holds {t}, not a list (one entry per word); "
                            f"{fix}")


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):   # an empty or all-null column: the row scan names it
        return True
    return pa.types.is_string(t) or pa.types.is_large_string(t) or \
        (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))


FILE_ROW = "\x00row"     # scan_split's own column: a row's number in its file (no data column is named so)


def scan_split(files: List[str], spec: JobSpec, field_name: str, holdout: str = "") -> SplitFacts:
    """Count rows, skip-able rows and labels, streaming one batch at a time. `holdout` ("train" or
    "validation") counts one side of the `data.validation_fraction` split of the training files."""
    check_files_agree(files, spec, field_name)
    facts = SplitFacts(files=files)
    cols = needed_columns(spec)
    task = get_task(spec.task.type)
    label_column, labels = task.label_column(spec.task), task.classes(spec.task)
    text_cols = [c for c in cols if c != label_column]
    shots = few_shot_thresholds(spec) if field_name == "data.train" else ()
    for path, first_row, batch in file_batches(files, cols):
        # before the hold-out and few-shot filters, so the file and row named are the file's own
        check_text_lengths(batch, text_cols, spec.model.max_length, f"{field_name} ({path})", first_row)
        if labels:   # on the file's own rows, before the filters: the row named is the file's
            values = batch.column(label_column).to_pylist()
            usable = task.usable(spec.task, batch, cols, text_cols).to_pylist()
            try:
                label_ids([v for v, good in zip(values, usable) if good], labels, label_column,
                          rows=[first_row + i for i, good in enumerate(usable) if good])
            except DataError as e:
                raise DataError(f"{field_name} ({path}): {e}") from None
        # each row's number in its file, carried through the filters below (which select rows, not columns)
        batch = batch.append_column(FILE_ROW, pa.array(range(first_row, first_row + len(batch)), pa.int64()))
        if holdout:
            batch = apply_holdout(batch, cols, spec.data.validation_fraction, holdout_seed(spec), holdout)
        if shots:
            batch = keep_shots(batch, tuple(cols), label_column, labels, shots, shots_seed(spec))
        facts.rows += len(batch)
        ok = task.usable(spec.task, batch, cols, text_cols)
        usable = batch.filter(ok)
        kept = usable.column(cols[-1]).to_pylist()
        row_numbers = usable.column(FILE_ROW).to_pylist()      # as the file numbers them (0-based)
        facts.skipped += len(batch) - len(kept)
        if len(kept) < len(batch) and not facts.first_skipped:
            facts.first_skipped = first_skipped(batch, ok, cols, path)
        try:
            task.check_supervision(spec.task, usable, row_numbers)
            ids = label_ids(kept, labels, label_column) if labels else []
        except DataError as e:
            raise DataError(f"{field_name} ({path}): {e}") from None
        for i in ids:
            facts.label_counts[labels[i]] = facts.label_counts.get(labels[i], 0) + 1
        for v in dict.fromkeys(kept) if labels else ():    # the batch's distinct values, in order
            kind = label_kind(v, labels)
            if kind not in facts.label_kinds:
                facts.label_kinds[kind] = (path, v)
    facts.usable = facts.rows - facts.skipped
    if facts.rows == 0 and holdout == "validation":
        raise DataError(f"{field_name}: holding out {spec.data.validation_fraction:g} of the training rows "
                        f"({', '.join(files[:2])}{' ...' if len(files) > 2 else ''}) held out none of them; "
                        "raise data.validation_fraction, or name a validation file (data.validation)")
    if facts.rows == 0:
        raise DataError(f"{field_name}: {files[0]} has no rows; point it at a file with data")
    if facts.usable == 0:
        raise DataError(f"{field_name}: every row of {files[0]} has empty text or no label/target")
    return facts


def first_skipped(batch: pa.Table, ok, cols: List[str], path: str) -> str:
    """Where a batch's first skipped row is (its row number in the file) and which column it lacks."""
    from peft_ray.data.columns import present

    i = ok.to_pylist().index(False)
    row = batch.slice(i, 1)
    lacks = [c for c in cols if not present(row.column(c))[0].as_py() or row.column(c)[0].as_py() == []]
    what = f"nothing in {', '.join(repr(c) for c in lacks)}" if lacks else "a value the task cannot read"
    return f"{path} row {row.column(FILE_ROW)[0].as_py()} (0-based) has {what}"


def note_skipped(field_name: str, facts: SplitFacts) -> None:
    """Rows a split skips (empty text, no label or target) are said with the first of them: the count
    alone left a user to guess, and in JSON Lines a row whose key is misspelt reads as one without it."""
    import sys

    if facts.skipped:
        print(f"[peft-ray] note: {field_name}: {facts.skipped} of {facts.rows} rows are skipped for an empty or "
              f"missing column, the first: {facts.first_skipped}. Fill or drop such rows (in JSON Lines, check "
              "the row's keys are spelt as the columns)", file=sys.stderr)


def file_batches(files: List[str], cols: List[str]):
    """(file, the number of its batch's first row, batch as a Table) for every batch of every file."""
    for path in files:
        first_row = 0
        for batch in iter_arrow([path], cols):
            if isinstance(batch, pa.RecordBatch):     # the filters below take Tables
                batch = pa.Table.from_batches([batch])
            yield path, first_row, batch
            first_row += len(batch)


def count_steps(spec: JobSpec, usable_rows: int) -> tuple[int, int]:
    per_worker = usable_rows // spec.scaling.num_workers   # Ray splits into equal shards
    micro = per_worker // spec.micro_batch_size
    # An epoch's last step takes the micro-batches left (recipe.step_windows), as HF Trainer's.
    steps_per_epoch = math.ceil(micro / spec.train.grad_accum)
    if steps_per_epoch == 0:
        raise DataError(f"data.train: {usable_rows} usable rows are fewer than one batch "
                        f"(train.batch_size={spec.train.batch_size}); lower the batch size or add data")
    total = spec.train.max_steps or math.ceil(spec.train.epochs * steps_per_epoch)
    return steps_per_epoch, total


def check_model_fits_task(spec: JobSpec, model_path: str) -> None:
    """Read the model's config now, before Ray starts: a bad pairing (verbalizer scoring on T5)
    fails here, and the config is cached for the data pipeline. (Also, inside a `ray job
    submit` driver, ray.init replaces the job's working directory, the process's cwd, and
    transformers cannot be imported for the first time after that.)"""
    kind = lm_kind(model_path, spec.model.trust_remote_code)
    get_task(spec.task.type).check_model(spec, kind)
    if spec.template.chat:
        check_chat(spec, model_path, kind)


def check_chat(spec: JobSpec, model_path: str, kind: str) -> None:
    if kind != "causal":
        raise SpecError(f"template.chat: chat templates are for causal LMs; '{spec.model.name_or_path}' is "
                        f"{kind}. Set template.chat: false")
    from peft_ray.rows.tokens import tokenizer

    tok = tokenizer(model_path, spec.model.trust_remote_code)   # the row builders' own: the same rendering
    if not getattr(tok, "chat_template", None):
        raise SpecError(f"template.chat: the tokenizer of '{spec.model.name_or_path}' has no chat template; "
                        "set template.chat: false, or use an instruct model such as smollm2")
    check_chat_renders(tok, spec)


CHAT_RENDER_SECONDS = 10


def check_chat_renders(tok, spec: JobSpec) -> None:
    """The model folder's chat template (Jinja, from a file users exchange) renders within
    CHAT_RENDER_SECONDS, into at most max_text_chars characters, in a forked child that is killed
    past the limit: transformers' sandbox bounds neither time nor size, and nested `range(100000)`
    loops hung the first row's rendering for ever while `validate` said ok. A run renders the
    template once, around fixed holes (rows.tokens.chat_prompt), so this rendering is the one it does."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_render_sample, args=(writer, tok, spec.template.system), daemon=True)
    child.start()
    finished = reader.poll(CHAT_RENDER_SECONDS)
    if not finished:
        child.kill()
    child.join()
    where = f"template.chat: the chat template of '{spec.model.name_or_path}'"
    if not finished:
        raise SpecError(f"{where} did not render one sample turn in {CHAT_RENDER_SECONDS} s; restore the model "
                        "folder's chat template (tokenizer_config.json or chat_template.jinja)")
    status, value = reader.recv()
    if status == "spec":
        raise SpecError(value)
    if status == "error":
        raise SpecError(f"{where} fails to render a user turn{' with template.system' * bool(spec.template.system)}:"
                        f" {shown(value)}")
    if value > max_text_chars(spec.model.max_length):
        raise SpecError(f"{where} renders one sample turn as {value:,} characters; restore the model folder's chat "
                        "template")


def _render_sample(conn, tok, system: Optional[str]) -> None:
    from peft_ray.rows.tokens import chat_prompt

    try:
        conn.send(("ok", len(chat_prompt(tok, "a sample sentence of the data " * 64, system))))
    except SpecError as e:   # rows.tokens' own check of what the template does with the text
        conn.send(("spec", str(e)))
    except Exception as e:   # the template's own raise_exception, a Jinja error
        conn.send(("error", f"{type(e).__name__}: {e}"))


POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def check_model_files(spec: JobSpec, model_path: str) -> None:
    """A local model's config.json parses, its safetensors headers read, and its position
    limit holds model.max_length plus the soft tokens: each failed late (a traceback, or a
    RuntimeError 46 s into start-up) before."""
    import json

    p = Path(model_path)
    if not p.is_dir():
        return                                        # a hub id: the cached config is checked on load
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError(f"model.name_or_path: {p / 'config.json'} is not valid JSON ({shown(str(e))}); "
                        "restore the model's config.json") from None
    for f in sorted(p.glob("*.safetensors")):
        _check_safetensors(f, "model.name_or_path")
    limit = next((cfg[k] for k in POSITION_KEYS if isinstance(cfg.get(k), int)), None)
    soft = spec.method.input_positions()
    # A decoder-only model decodes after a prompt of up to max_length tokens (an encoder-decoder's
    # decoder has positions of its own): a learned position table (GPT-2) has no row past its limit.
    new = 0 if cfg.get("is_encoder_decoder") else get_task(spec.task.type).generated_tokens(spec.task)
    if limit is not None and spec.model.max_length + soft + new > limit:
        extra = (f" + method.num_virtual_tokens ({soft})" if soft else "") + \
            (f" + task.decoding.max_new_tokens ({new})" if new else "")
        raise SpecError(f"model.max_length ({spec.model.max_length}){extra} exceeds the {limit} positions of "
                        f"'{spec.model.name_or_path}' (config.json); lower model.max_length to at most "
                        f"{limit - soft - new}")


def _check_safetensors(path: Path, field: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:                            # SafetensorError, OSError: truncated, not safetensors
        raise SpecError(f"{field}: {path} is not a readable safetensors file ({shown(str(e))}); "
                        "download or copy it again") from None


def note_class_counts(spec: JobSpec, train: SplitFacts) -> None:
    """Said, not refused (a new-user review found both silent): a class of task.labels that no
    training row has (it can never be predicted for a reason learnt), and data.train_shots above
    what a class holds (the few-shot run then trains on every row of it, not K)."""
    import sys

    classes = get_task(spec.task.type).classes(spec.task)
    missing = [c for c in classes if not train.label_counts.get(c)]
    if missing and len(missing) < len(classes):
        print(f"[peft-ray] note: no training row has the label(s) {missing} of task.labels, so the model never "
              "learns them; add such rows, or drop the label(s) if the data cannot have them", file=sys.stderr)
    shots = spec.data.train_shots
    short = {c: n for c, n in train.label_counts.items() if shots and n < shots}
    if short:
        held = ", ".join(f"'{c}' {n}" for c, n in short.items())
        print(f"[peft-ray] note: data.train_shots is {shots} but some classes have fewer usable rows ({held}); "
              "those train on all they have, so the run is not the K-shot one asked for", file=sys.stderr)


def note_shared_files(train: List[str], validation: List[str]) -> None:
    """A glob such as `data.train: '*.parquet'` also picks up validation.parquet: the model is then
    scored on rows it trained on, and nothing said so. A note, not an error: evaluating on the
    training file can be meant (a sanity check)."""
    import os
    import sys

    shared = sorted({os.path.realpath(f) for f in train} & {os.path.realpath(f) for f in validation})
    if shared:
        print(f"[peft-ray] note: data.train and data.validation both read {', '.join(shared[:3])}"
              f"{' ...' if len(shared) > 3 else ''}: evaluation scores rows the model trains on. Narrow "
              "data.train's pattern, or hold rows out (data.validation: null, data.validation_fraction)",
              file=sys.stderr)


def check_model_and_method(spec: JobSpec) -> str:
    """The model's folder, files and weights, and the method and task on it (no data read, no
    weights loaded): its resolved path."""
    model_path = resolve_model_path(spec.model.name_or_path)
    check_model_folder(model_path, spec.model.allow_pickle)
    check_model_files(spec, model_path)
    check_weights_match(model_path, spec.model.trust_remote_code)  # on the meta device: no weights read
    check_method_modules(model_path, spec.method, spec.model.trust_remote_code)
    check_model_fits_task(spec, model_path)
    if spec.method.init_from:
        check_init_from(spec.method.init_from, get_method(spec.method.name).peft_type, spec.method)
    return model_path


def run_preflight(spec: JobSpec, training: bool = True) -> Preflight:
    """Every check before any cluster work. `training=False` (zero-shot evaluation): the training
    files are read only where the validation rows are held out of them, and nothing about training
    (batches, steps) is checked; `train` is then None unless held out from."""
    if spec.train.metric_for_best is not None:   # a name evaluation never reports: adapter/ would be the last step's
        get_task(spec.task.type).check_metric(spec.task, spec.train.metric_for_best, "train.metric_for_best")
    model_path = check_model_and_method(spec)
    holdout = spec.data.holds_out
    train_files = resolve_files(spec.data.root, spec.data.train, "data.train") if training or holdout else []
    train = None
    if training:
        train = scan_split(train_files, spec, "data.train", "train" if holdout else "")
        get_task(spec.task.type).check_train_facts(train)
        note_skipped("data.train", train)
        note_class_counts(spec, train)
    val = None
    if holdout:
        val = scan_split(train_files, spec, "data.validation_fraction", "validation")
    elif spec.data.validation:
        val_files = resolve_files(spec.data.root, spec.data.validation, "data.validation")
        if training:
            note_shared_files(train_files, val_files)
        val = scan_split(val_files, spec, "data.validation")
    if val is not None:
        note_skipped("data.validation_fraction" if holdout else "data.validation", val)
    check_label_kinds(spec, {"data.train": train, "data.validation": val})
    spe, total = count_steps(spec, train.usable) if train is not None else (0, 0)
    return Preflight(model_path, train, val, spe, total)


def note_sample_cut(spec: JobSpec, pre: Preflight, rows: int = 512) -> None:
    """`validate` only (it tokenizes, which the pre-flight of `train` leaves to the workers): the share of
    the first `rows` training rows that model.max_length cuts, as the task's own row builder cuts them.
    A new-user review: generation at max_length 8 cut every prompt, and `validate` said ok."""
    import sys

    from peft_ray.data.preprocess import preprocess
    from peft_ray.tasks.pipeline import make_preprocess_config

    if pre.train is None:
        return
    cfg = make_preprocess_config(spec, pre.model_path, "train")
    cut = seen = 0
    for _, _, batch in file_batches(pre.train.files, needed_columns(spec)):
        # the few-shot filter keeps K rows a class from anywhere in the files, and tokenizes only those
        built = preprocess(batch if cfg.shots_thresholds else batch.slice(0, rows - seen), cfg)
        if "truncated" not in built.column_names:     # a plugin task's rows need not count their cuts
            return
        cut += sum(built.column("truncated").to_pylist())
        seen += len(built)
        if seen >= rows:
            break
    if seen and cut / seen > 0.01:
        print(f"[peft-ray] note: model.max_length {spec.model.max_length} cuts {cut} of the first {seen} training "
              f"rows ({cut / seen:.0%}), template and special tokens included; what is cut never reaches the "
              "model. Raise model.max_length if that matters for this task", file=sys.stderr)


def check_label_kinds(spec: JobSpec, splits: Dict[str, Optional[SplitFacts]]) -> None:
    """Labels given as names somewhere and as ids elsewhere are refused: a name is read by name
    and an id as a position in task.labels, so reordering task.labels (or ids numbered in another
    order) turned one split's labels over and not the other's, without a word (a new-user review:
    validation accuracy 1.0 became 0.0)."""
    seen = {kind: (name, where) for name, facts in splits.items() if facts is not None
            for kind, where in facts.label_kinds.items()}
    if not {"name", "id"} <= seen.keys():
        return
    labels = get_task(spec.task.type).classes(spec.task)
    (name_field, (name_file, name)), (id_field, (id_file, id_)) = seen["name"], seen["id"]
    order = ", ".join(f"{i} = {label!r}" for i, label in enumerate(labels))
    raise DataError(f"{id_field} ({id_file}) gives labels as ids (e.g. {id_!r}) and {name_field} ({name_file}) as "
                    f"names (e.g. {name!r}). An id is read as a position in task.labels ({order}) and a name by "
                    "name, so wherever the ids were numbered in another order, those labels are silently "
                    "wrong. Give every file the same kind: the names, or ids in task.labels' order")
