"""Classification rows: the rendered text and its label id; with verbalizer scoring also the
score position (the {label} mask, or the prompt's last token). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import pyarrow as pa

from peft_ray.rows import RowConfig
from peft_ray.rows.labels import has_value, label_ids
from peft_ray.rows.tokens import chat_prompt, cut_prompt, fit_columns, fit_columns_many, lead_tokens, tokenizer
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
    """Render the template for each row, tokenize, and map labels. Skips null/empty text rows. A row
    longer than model.max_length loses the end of its input columns (rows.tokens.fit_columns_many),
    not the template's words after them; the tokenizer's own cut applies where that cannot fit it."""
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
    ids = tok(texts, add_special_tokens=True)["input_ids"] if texts else []
    long = [j for j, x in enumerate(ids) if len(x) > cfg.max_length]
    if long:
        encoded = {}          # rendered text -> ids: a fitted row's last count is its tokens

        def lengths(rs: List[dict]) -> List[int]:
            got = [template.render(r, label_text) or "" for r in rs]
            encoded.update(zip(got, tok(got, add_special_tokens=True)["input_ids"]))
            return [len(encoded[t]) for t in got]

        fitted = fit_columns_many(tok, template.column_slots, [rows[keep[j]] for j in long], lengths,
                                  cfg.max_length, lengths=[len(ids[j]) for j in long])
        for j, row in zip(long, fitted):
            texts[j] = template.render(row, label_text) or texts[j]
            ids[j] = encoded.get(texts[j], ids[j])
        over = [j for j in long if len(ids[j]) > cfg.max_length]
        if over:   # the tokenizer's cut, after the special tokens are placed (so they survive it)
            cut = tok([texts[j] for j in over], add_special_tokens=True, truncation=True,
                      max_length=cfg.max_length)["input_ids"]
            for j, x in zip(over, cut):
                ids[j] = x
    truncated = [False] * len(ids)
    for j in long:
        truncated[j] = True
    labels = label_ids([rows[i][cfg.label_column] for i in keep], cfg.labels, cfg.label_column)
    return pa.table({"input_ids": pa.array(ids, type=pa.list_(pa.int32())), "label": pa.array(labels, type=pa.int64()),
                     "length": pa.array([len(x) for x in ids], type=pa.int32()),
                     "truncated": pa.array(truncated, type=pa.bool_())}, schema=HEAD_SCHEMA)


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
