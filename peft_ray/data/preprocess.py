"""Template rendering + tokenization over Arrow batches (runs in Ray Data map_batches,
or in-process for --local). Output rows: input_ids, label, length, truncated."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from peft_ray.errors import DataError
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


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str, trust_remote_code: bool):
    from peft_ray.models import load_tokenizer

    return load_tokenizer(path, trust_remote_code)


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
    tok = _tokenizer(cfg.tokenizer_path, cfg.trust_remote_code)
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


def make_preprocess_config(spec, tokenizer_path: str) -> PreprocessConfig:
    return PreprocessConfig(
        tokenizer_path=tokenizer_path, template=spec.template.text,
        label_column=spec.task.label_column, labels=tuple(spec.task.labels or ()),
        max_length=spec.model.max_length, trust_remote_code=spec.model.trust_remote_code)


def needed_columns(spec) -> List[str]:
    return Template.parse(spec.template.text).columns + [spec.task.label_column]


def select_columns(table: pa.Table, columns: Optional[List[str]]) -> pa.Table:
    return table.select(columns) if columns else table
