"""NER rows: words tokenized with is_split_into_words, each word's tag on its first sub-token. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import pyarrow as pa

from peft_ray.errors import DataError
from peft_ray.rows import RowConfig
from peft_ray.rows.tokens import IGNORE, tokenizer
from peft_ray.templates import Template


def tag_names(entity_types) -> List[str]:
    """O, B-T1, I-T1, B-T2, I-T2, ... (the label-id order of the head)."""
    return ["O"] + [f"{p}-{t}" for t in entity_types for p in ("B", "I")]


def tag_ids(tags: list, names: List[str], where: str, column: str) -> List[int]:
    index = {t: i for i, t in enumerate(names)}
    out = []
    for t in tags:
        if isinstance(t, str) and t in index:
            out.append(index[t])
        elif isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(names):
            out.append(t)
        else:
            raise DataError(f"column '{column}', {where}: tag {t!r} is not one of {names} (IOB2 tags of "
                            "task.labels, or their ids in that order); fix the row or add its type to task.labels")
    return out


def check_aligned(tokens, tags, where: str, tokens_column: str, tags_column: str) -> None:
    """One tag per word (pre-flight and the row builder: a row the scan could not see fails here)."""
    if isinstance(tokens, list) and isinstance(tags, list) and len(tokens) != len(tags):
        raise DataError(f"{where}: '{tokens_column}' has {len(tokens)} words but '{tags_column}' has {len(tags)} "
                        "tags; they must align one to one")


def _words(template: Template, tokens: List[str]):
    """(words, index of the first data word): hard text becomes words without labels."""
    words, start = [], 0
    for p in template.parts:
        if p.kind == "text":
            words += p.value.split()
        elif p.kind == "column":
            start = len(words)
            words += [str(t) for t in tokens]
    return words, start


@dataclass(frozen=True)
class TokenClassificationRows(RowConfig):
    labels: Tuple[str, ...] = ()        # entity types
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"


def build_rows(batch: pa.Table, cfg: TokenClassificationRows) -> pa.Table:
    tok = tokenizer(cfg.tokenizer_path, cfg.trust_remote_code)
    template = Template.parse(cfg.template)
    names = tag_names(cfg.labels)
    rows = []
    for n, row in enumerate(batch.to_pylist()):
        tokens, tags = row.get(cfg.tokens_column), row.get(cfg.tags_column)
        if not tokens or tags is None:
            continue
        where = f"row {n} of a batch"
        check_aligned(tokens, tags, where, cfg.tokens_column, cfg.tags_column)
        rows.append(_encode(tok, template, tokens, tag_ids(tags, names, where, cfg.tags_column), cfg.max_length))
    return pa.Table.from_pylist(rows, schema=SCHEMA)


SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("target_ids", pa.list_(pa.int32())),
                    ("word_pos", pa.list_(pa.int32())), ("gold", pa.list_(pa.int32())),
                    ("length", pa.int32()), ("truncated", pa.bool_())])
DUMMY = {"input_ids": [0], "target_ids": [IGNORE], "word_pos": [], "gold": [], "length": 1, "truncated": False}


def _encode(tok, template: Template, tokens: List[str], tags: List[int], max_length: int) -> dict:
    words, start = _words(template, tokens)
    enc = tok(words, is_split_into_words=True, truncation=True, max_length=max_length)
    ids, word_ids = enc["input_ids"], enc.word_ids()
    target = [IGNORE] * len(ids)
    word_pos = [-1] * len(tokens)               # the token position of each data word (-1: cut, or no token)
    for pos, w in enumerate(word_ids):
        if w is None or w < start or w >= start + len(tokens) or (pos and word_ids[pos - 1] == w):
            continue
        target[pos] = tags[w - start]
        word_pos[w - start] = pos
    return {"input_ids": ids, "target_ids": target, "word_pos": word_pos, "gold": tags, "length": len(ids),
            # a word the tokenizer makes no token of ("", a zero-width space, a soft hyphen) also has no
            # position; only a row at max_length was cut (it was reported as truncated, pointing users
            # at model.max_length)
            "truncated": -1 in word_pos and len(ids) >= max_length}
