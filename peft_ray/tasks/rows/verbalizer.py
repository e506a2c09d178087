"""Verbalizer-scoring rows: the score position (the {label} mask, or the prompt's last token)."""

from __future__ import annotations

import pyarrow as pa

from peft_ray.tasks.rows.tokens import chat_prompt, lead_tokens, tokenizer
from peft_ray.templates import Template


def preprocess(batch: pa.Table, cfg) -> pa.Table:
    from peft_ray.data.preprocess import label_ids

    tok = tokenizer(cfg.tokenizer_path, cfg.trust_remote_code)
    template = Template.parse(cfg.template)
    rows, labels = [], []
    for row in batch.to_pylist():
        if row.get(cfg.label_column) is None:
            continue
        built = _mlm_row(tok, template, row, cfg) if cfg.scoring == "mlm" else _causal_row(tok, template, row, cfg)
        if built is not None:
            rows.append(built)
            labels.append(row[cfg.label_column])
    ids = label_ids(labels, cfg.labels, cfg.label_column)
    for r, y in zip(rows, ids):
        r["label"] = int(y)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("score_pos", pa.int32()), ("length", pa.int32()),
                    ("truncated", pa.bool_()), ("label", pa.int64())])


def _mlm_row(tok, template: Template, row: dict, cfg):
    text = template.render(row, tok.mask_token)
    if text is None:
        return None
    if not template.has_label_slot:
        text = f"{text} {tok.mask_token}"
    ids = tok(text)["input_ids"]
    pos = ids.index(tok.mask_token_id)
    cut = len(ids) - cfg.max_length
    if cut > 0:  # drop text just before the mask, so the mask (and what follows it) survives
        ids = ids[:max(pos - cut, 1)] + ids[pos:]
        ids = ids[:cfg.max_length]
        pos = ids.index(tok.mask_token_id)
    return {"input_ids": ids, "score_pos": pos, "length": len(ids), "truncated": cut > 0}


def _causal_row(tok, template: Template, row: dict, cfg):
    prompt = template.prompt_part().render(row)
    if prompt is None:
        return None
    if cfg.chat:  # the label words are the assistant's reply
        prompt, lead = chat_prompt(tok, prompt, cfg.system), []
    else:
        prompt = prompt.rstrip(" ")  # label words are tokenized with their leading space (" positive")
        lead = list(lead_tokens(tok))
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    room = cfg.max_length - len(lead)
    ids = lead + p[-room:]
    return {"input_ids": ids, "score_pos": len(ids) - 1, "length": len(ids), "truncated": len(p) > room}
