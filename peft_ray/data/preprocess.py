"""Template rendering + tokenization over Arrow batches (runs in Ray Data map_batches,
or in-process for --local). Output rows: input_ids, label, length, truncated."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from peft_ray.errors import DataError, SpecError
from peft_ray.templates import Template


@dataclass(frozen=True)
class PreprocessConfig:
    """Flat and picklable: it is shipped to Ray Data tasks."""

    tokenizer_path: str
    template: str
    label_column: str
    labels: Tuple[str, ...]
    max_length: int
    trust_remote_code: bool = False
    task_type: str = "classification"
    scoring: str = "head"               # classification: head | mlm | causal (verbalizer scoring)
    verbalizer: Tuple[Tuple[str, ...], ...] = ()   # words per label, in label order
    target_column: str = "target"
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    max_target_length: int = 64
    lm_kind: str = "encoder"            # encoder | causal | seq2seq
    columns: Tuple[str, ...] = ()       # the columns the task reads (hold-out hash)
    holdout_fraction: float = 0.0
    holdout_seed: int = 0
    holdout_side: str = ""              # "" | "train" | "validation"
    shots_thresholds: Tuple[int, ...] = ()   # data.train_shots (train split only): see data/fewshot.py
    shots_seed: int = 0
    chat: bool = False                  # template.chat (causal LMs): see tasks/rows/tokens.chat_prompt
    system: Optional[str] = None


def label_ids(values: List, labels: Tuple[str, ...], column: str) -> np.ndarray:
    """Labels may be ids (0..K-1) or label names; anything else is an error naming the value."""
    index = {name: i for i, name in enumerate(labels)}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, str) and v in index:
            out[i] = index[v]
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < len(labels):
            out[i] = int(v)
        else:
            raise DataError(f"column '{column}': label {v!r} is not in task.labels {list(labels)} "
                            f"(use an id 0..{len(labels) - 1} or a label name)")
    return out


def _tokenize(tok, texts: List[str], max_length: int) -> Tuple[List[List[int]], List[bool]]:
    ids = tok(texts, add_special_tokens=True, truncation=False)["input_ids"]
    long = [i for i, x in enumerate(ids) if len(x) > max_length]
    if long:  # re-tokenize only the long rows, so special tokens survive truncation
        cut = tok([texts[i] for i in long], add_special_tokens=True, truncation=True,
                  max_length=max_length)["input_ids"]
        for i, x in zip(long, cut):
            ids[i] = x
    truncated = [False] * len(ids)
    for i in long:
        truncated[i] = True
    return ids, truncated


def preprocess_batch(batch: pa.Table, cfg: PreprocessConfig) -> pa.Table:
    """Render the template for each row, tokenize, and map labels. Skips null/empty text rows."""
    from peft_ray.tasks.rows.tokens import tokenizer

    tok = tokenizer(cfg.tokenizer_path, cfg.trust_remote_code)
    template = Template.parse(cfg.template)
    rows = batch.to_pylist()
    label_text = tok.mask_token or ""
    texts, keep = [], []
    for i, row in enumerate(rows):
        text = template.render(row, label_text)
        if text is not None and row.get(cfg.label_column) is not None:
            texts.append(text)
            keep.append(i)
    ids, truncated = _tokenize(tok, texts, cfg.max_length) if texts else ([], [])
    labels = label_ids([rows[i][cfg.label_column] for i in keep], cfg.labels, cfg.label_column)
    return pa.table({
        "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
        "label": pa.array(labels, type=pa.int64()),
        "length": pa.array([len(x) for x in ids], type=pa.int32()),
        "truncated": pa.array(truncated, type=pa.bool_()),
    })


_LOCK = threading.Lock()


def preprocess(batch: pa.Table, cfg: PreprocessConfig) -> pa.Table:
    """The one map_batches function: hold-out split, then the task's own row builder.

    Serialized per process: Ray Data may call it from several threads, and the first call
    imports transformers (and with it torch); two threads importing torch at once fail with
    "partially initialized module 'torch'". One Ray task runs one batch at a time anyway."""
    from peft_ray.data.holdout import apply_holdout
    from peft_ray.tasks.rows import row_builder

    with _LOCK:
        batch = apply_holdout(batch, list(cfg.columns), cfg.holdout_fraction, cfg.holdout_seed, cfg.holdout_side)
        if cfg.shots_thresholds:
            from peft_ray.data.fewshot import keep_shots

            batch = keep_shots(batch, cfg.columns, cfg.label_column, cfg.labels, cfg.shots_thresholds,
                               cfg.shots_seed)
        return row_builder(cfg.task_type, cfg.scoring)(batch, cfg)


def make_preprocess_config(spec, tokenizer_path: str, split: str = "train") -> PreprocessConfig:
    """`split` picks the side of a `data.validation_fraction` hold-out ("train" or "validation")."""
    from peft_ray.models import lm_kind
    from peft_ray.templates import normalize_verbalizer

    t = spec.task
    kind = lm_kind(tokenizer_path, spec.model.trust_remote_code)
    labels = tuple(t.labels or ())
    verb = normalize_verbalizer(spec.template.verbalizer) or {lab: [lab] for lab in labels}
    holdout = spec.data.validation is None and spec.data.validation_fraction > 0
    return PreprocessConfig(
        tokenizer_path=tokenizer_path, template=spec.template.text,
        label_column=t.label_column, labels=labels,
        max_length=spec.model.max_length, trust_remote_code=spec.model.trust_remote_code,
        task_type=t.type, scoring=classification_scoring(spec, kind),
        verbalizer=tuple(tuple(verb.get(lab, [lab])) for lab in labels),
        target_column=t.target_column, tokens_column=t.tokens_column, tags_column=t.tags_column,
        max_target_length=t.max_target_length, lm_kind=kind, columns=tuple(needed_columns(spec)),
        holdout_fraction=spec.data.validation_fraction if holdout else 0.0, holdout_seed=spec.train.seed,
        holdout_side=split if holdout else "", chat=spec.template.chat and kind == "causal",
        system=spec.template.system,
        shots_thresholds=few_shot_thresholds(spec) if split == "train" else (), shots_seed=shots_seed(spec))


def shots_seed(spec) -> int:
    return spec.train.seed if spec.data.shots_seed is None else spec.data.shots_seed


def few_shot_thresholds(spec) -> Tuple[int, ...]:
    """data.train_shots: each class's hash threshold (one pass over train, cached); () when unset."""
    from peft_ray.data.fewshot import shot_thresholds
    from peft_ray.data.sources import resolve_files

    if not spec.data.train_shots:
        return ()
    holdout = spec.data.validation is None and spec.data.validation_fraction > 0
    files = tuple(resolve_files(spec.data.root, spec.data.train, "data.train"))
    return shot_thresholds(files, tuple(needed_columns(spec)), spec.task.label_column, tuple(spec.task.labels),
                           spec.data.train_shots, shots_seed(spec),
                           (spec.data.validation_fraction if holdout else 0.0, spec.train.seed))


def classification_scoring(spec, kind: str) -> str:
    """head (a trained classifier) or verbalizer scoring by the LM head: mlm or causal."""
    if spec.task.type != "classification":
        return "head"
    return classification_scoring_for(spec.task.head, kind)


def classification_scoring_for(head: str, kind: str) -> str:
    if head == "auto":
        head = "verbalizer" if kind == "causal" else "head"
    if head == "head":
        return "head"
    if kind == "seq2seq":
        raise SpecError("task.head: verbalizer scoring supports masked LMs (BERT family) and causal LMs "
                        "(GPT-2, Llama); for T5 use task.head: head or a generation task")
    return "causal" if kind == "causal" else "mlm"


def column_fields(spec) -> Dict[str, str]:
    """Each input column the task reads -> the job field that names it (for errors)."""
    t = spec.task
    out = {c: "template.text" for c in Template.parse(spec.template.text).columns}
    if t.type == "classification":
        out[t.label_column] = "task.label_column"
    elif t.type == "token_classification":
        out = {t.tokens_column: "task.tokens_column", t.tags_column: "task.tags_column"}
    else:
        out[t.target_column] = "task.target_column"
    return out


def needed_columns(spec) -> List[str]:
    return list(column_fields(spec))


def select_columns(table: pa.Table, columns: Optional[List[str]]) -> pa.Table:
    return table.select(columns) if columns else table
