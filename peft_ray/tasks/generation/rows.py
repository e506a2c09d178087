"""Generation / translation rows: prompt and response token ids, the loss mask, the reference. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from peft_ray.rows import RowConfig
from peft_ray.rows.tokens import IGNORE, chat_prompt, cut_prompt, eos_id, lead_tokens, response_sep, split_ids, tokenizer
from peft_ray.templates import Template


@dataclass(frozen=True)
class GenerationRows(RowConfig):
    target_column: str = "target"
    max_target_length: int = 64
    lm_kind: str = "causal"             # causal | seq2seq


def build_rows(batch: pa.Table, cfg: GenerationRows) -> pa.Table:
    tok = tokenizer(cfg.tokenizer_path, cfg.trust_remote_code)
    template = Template.parse(cfg.template)
    prompt_t, sep = template.prompt_part(), template.label_sep
    rows = []
    for row in batch.to_pylist():
        prompt, resp = prompt_t.render(row), row.get(cfg.target_column)
        if prompt is None or resp is None or not str(resp).strip():
            continue
        build = _causal_row if cfg.lm_kind == "causal" else _seq2seq_row
        rows.append(build(tok, prompt, str(resp), cfg, sep))
    return pa.Table.from_pylist(rows, schema=SCHEMA)


SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("target_ids", pa.list_(pa.int32())),
                    ("prompt_len", pa.int32()), ("source_ids", pa.list_(pa.int32())), ("reference", pa.string()),
                    ("length", pa.int32()), ("truncated", pa.bool_()), ("source_truncated", pa.bool_())])
DUMMY = {"input_ids": [0, 0], "target_ids": [IGNORE, IGNORE], "prompt_len": 1, "source_ids": [0], "reference": "",
         "length": 2, "truncated": False, "source_truncated": False}   # a worker without rows still steps


def _causal_row(tok, prompt: str, resp: str, cfg, sep: str = " ") -> dict:
    user = prompt if cfg.chat else None
    if cfg.chat:
        prompt = chat_prompt(tok, prompt, cfg.system)
    p, r = split_ids(tok, prompt, resp, response_sep(cfg.chat, sep))   # as the template writes them
    r = r[:cfg.max_target_length - 1] + [eos_id(tok)]
    lead = [] if cfg.chat else list(lead_tokens(tok))   # a chat template writes its own
    # What decoding reads: the prompt alone cut to max_length, whatever the reference, so eval scores
    # the input predict gives (its reference is a placeholder) and no reference length leaks into it.
    source_room = max(cfg.max_length - len(lead), 1)
    source = lead + cut_prompt(tok, p, source_room, user, cfg.system)
    room = max(cfg.max_length - len(r) - len(lead), 1)  # teacher forcing: the prompt and the response fit
    whole = len(p)
    p = lead + cut_prompt(tok, p, room, user, cfg.system)   # the end of a long prompt (nearest the answer)
    return {"input_ids": p + r, "target_ids": [IGNORE] * len(p) + r, "prompt_len": len(p), "source_ids": source,
            "reference": resp, "length": len(p) + len(r), "truncated": whole > room,
            "source_truncated": whole > source_room}


def _seq2seq_row(tok, prompt: str, resp: str, cfg, sep: str = " ") -> dict:
    p = tok(prompt)["input_ids"]
    truncated = len(p) > cfg.max_length          # a prompt of exactly max_length tokens is whole
    if truncated:                                 # the tokenizer's own cut: it keeps the closing special token
        p = tok(prompt, truncation=True, max_length=cfg.max_length)["input_ids"]
    r = tok(resp, add_special_tokens=False)["input_ids"][:cfg.max_target_length - 1] + [eos_id(tok)]
    return {"input_ids": p, "target_ids": r, "prompt_len": len(p), "source_ids": p, "reference": resp,
            "length": len(p) + len(r), "truncated": truncated, "source_truncated": truncated}
