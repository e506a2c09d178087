"""Classification rows: the rendered text and its label id; with verbalizer scoring also the
score position (the {label} mask, or the prompt's last token). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import pyarrow as pa

from peft_ray.rows import RowConfig
from peft_ray.rows.labels import has_value, label_ids
from peft_ray.rows.tokens import chat_prompt, cut_prompt, fit_columns, lead_tokens, tokenizer
from peft_ray.templates import Template


@dataclass(frozen=True)
class ClassificationRows(RowConfig):
    label_column: str = "label"
    labels: Tuple[str, ...] = ()
    scoring: str = "head"               # head | mlm | causal (verbalizer scoring)


def build_rows(batch: pa.Table, cfg: ClassificationRows) -> pa.Table:
    return head_rows(batch, cfg) if cfg.scoring == "head" else verbalizer_rows(batch, cfg)


HEAD_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("label", pa.int64()), ("length", pa.int32()),
                         ("truncated", pa.bool_())])


def head_rows(batch: pa.Table, cfg: ClassificationRows) -> pa.Table:
    """Render the template for each row, tokenize, and map labels. Skips null/empty text rows."""
    tok = tokenizer(cfg.tokenizer_path, cfg.trust_remote_code)
    template = Template.parse(cfg.template)
    rows = batch.to_pylist()
    label_text = tok.mask_token or ""
    texts, keep = [], []
    for i, row in enumerate(rows):
        text = template.render(row, label_text)
        if text is not None and has_value(row.get(cfg.label_column)):
            texts.append(text)
            keep.append(i)
    ids, truncated = _tokenize(tok, texts, cfg.max_length) if texts else ([], [])
    for j in (j for j, cut in enumerate(truncated) if cut):     # the input's end, not the template's words
        fitted = fit_columns(tok, template.column_slots, rows[keep[j]],
                             lambda r: len(tok(template.render(r, label_text) or "")["input_ids"]), cfg.max_length)
        text = template.render(fitted, label_text) if fitted is not rows[keep[j]] else None
        if text:
            ids[j] = _tokenize(tok, [text], cfg.max_length)[0][0]
    labels = label_ids([rows[i][cfg.label_column] for i in keep], cfg.labels, cfg.label_column)
    return pa.table({"input_ids": pa.array(ids, type=pa.list_(pa.int32())), "label": pa.array(labels, type=pa.int64()),
                     "length": pa.array([len(x) for x in ids], type=pa.int32()),
                     "truncated": pa.array(truncated, type=pa.bool_())}, schema=HEAD_SCHEMA)


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


def verbalizer_rows(batch: pa.Table, cfg: ClassificationRows) -> pa.Table:
    tok = tokenizer(cfg.tokenizer_path, cfg.trust_remote_code)
    template = Template.parse(cfg.template)
    rows, labels = [], []
    for row in batch.to_pylist():
        if not has_value(row.get(cfg.label_column)):
            continue
        built = _mlm_row(tok, template, row, cfg) if cfg.scoring == "mlm" else _causal_row(tok, template, row, cfg)
        if built is not None:
            rows.append(built)
            labels.append(row[cfg.label_column])
    ids = label_ids(labels, cfg.labels, cfg.label_column)
    for r, y in zip(rows, ids):
        r["label"] = int(y)
    return pa.Table.from_pylist(rows, schema=VERBALIZER_SCHEMA)


VERBALIZER_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("score_pos", pa.int32()), ("length", pa.int32()),
                    ("truncated", pa.bool_()), ("label", pa.int64())])


def _mlm_row(tok, template: Template, row: dict, cfg):
    def ids_of(r: dict):
        text = template.render(r, tok.mask_token)
        if text is None:
            return None
        return tok(text if template.has_label_slot else f"{text} {tok.mask_token}")["input_ids"]

    ids = ids_of(row)
    if ids is None:
        return None
    cut = len(ids) - cfg.max_length
    if cut > 0:   # the input's end goes first, the template's cue before the mask stays
        ids = ids_of(fit_columns(tok, template.column_slots, row, lambda r: len(ids_of(r) or ()), cfg.max_length)) or ids
    pos = ids.index(tok.mask_token_id)
    if len(ids) > cfg.max_length:  # else: drop text just before the mask, so the mask (and what follows) survives
        cut = len(ids) - cfg.max_length
        ids = ids[:max(pos - cut, 1)] + ids[pos:]
        ids = ids[:cfg.max_length]
        pos = ids.index(tok.mask_token_id)
    return {"input_ids": ids, "score_pos": pos, "length": len(ids), "truncated": cut > 0}


def _causal_row(tok, template: Template, row: dict, cfg):
    prompt = template.prompt_part().render(row)
    if prompt is None:
        return None
    user = prompt if cfg.chat else None
    if cfg.chat:  # the label words are the assistant's reply
        prompt, lead = chat_prompt(tok, prompt, cfg.system), []
    else:
        prompt = prompt.rstrip(" ")  # label words are tokenized with their leading space (" positive")
        lead = list(lead_tokens(tok))
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    room = cfg.max_length - len(lead)
    ids = lead + cut_prompt(tok, p, room, user, cfg.system)
    return {"input_ids": ids, "score_pos": len(ids) - 1, "length": len(ids), "truncated": len(p) > room}
