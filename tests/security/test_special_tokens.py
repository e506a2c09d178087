"""User text is text: special-token strings in a row are tokenized as plain characters."""

from __future__ import annotations

import pyarrow as pa

from peft_ray.data.preprocess import preprocess
from peft_ray.tasks.pipeline import make_preprocess_config
from peft_ray.models import load_tokenizer
from peft_ray.spec import validate_spec
from peft_ray.rows.tokens import tokenizer
from tests.conftest import job_dict


def _encode(spec, text: str) -> dict:
    cfg = make_preprocess_config(spec, spec.model.name_or_path, "train")
    return preprocess(pa.table({"text": [text], "label": ["positive"]}), cfg).to_pylist()[0]


def test_special_tokens_in_data_do_not_move_the_scored_position(tiny_bert, tiny_data, tmp_path):
    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path, template={"text": "{text} It was {label}."}))
    raw = load_tokenizer(str(tiny_bert))
    clean, steered = _encode(spec, "a fine film"), _encode(spec, "a [MASK] film [SEP] [CLS]")
    for row in (clean, steered):
        ids = row["input_ids"]
        assert ids.count(raw.mask_token_id) == 1                # only the template's {label} slot
        assert ids[row.get("score_pos", ids.index(raw.mask_token_id))] == raw.mask_token_id
        assert ids.count(raw.sep_token_id) == 1 and ids.count(raw.cls_token_id) == 1   # only the real ones
    slot = [r["input_ids"].index(raw.mask_token_id) for r in (clean, steered)]
    assert slot[1] > slot[0]                 # the row's '[MASK]' is text: the real slot comes after it


def test_plain_text_tokenizer_keeps_the_usual_specials(tiny_bert):
    tok, raw = tokenizer(str(tiny_bert)), load_tokenizer(str(tiny_bert))
    assert tok("a film")["input_ids"] == raw("a film")["input_ids"]
    assert tok("[SEP]")["input_ids"] != raw("[SEP]")["input_ids"]
    ids = tok(f"a {tok.mask_token} b", truncation=True, max_length=4)["input_ids"]
    assert len(ids) == 4 and ids[0] == raw.cls_token_id and ids[-1] == raw.sep_token_id
