"""Our prompt-tuning adapter loads in HF PEFT and gives the same logits."""

from __future__ import annotations

import json
import re

import pytest
import torch

from peft_ray.adapter import gather_adapter_state, write_adapter
from peft_ray.methods import get_method
from peft_ray.spec import validate_spec
from peft_ray.train.engine import build_model
from tests.conftest import job_dict

peft = pytest.importorskip("peft")


def _ids(tok, texts):
    enc = tok(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("init", ["random", "vocab", "text"])
def test_adapter_loads_in_peft_with_same_logits(tiny_bert, tiny_data, tmp_path, init):
    from transformers import AutoModelForSequenceClassification

    method = {"name": "prompt_tuning", "num_virtual_tokens": 5, "init": init,
              "init_text": "the film was good" if init == "text" else None}
    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path, method=method))
    model, tok, path = build_model(spec)
    with torch.no_grad():  # move off the init so the test cannot pass by accident
        model.prompt.add_(torch.randn_like(model.prompt) * 0.1)
        model.base.classifier.weight.add_(0.3)
    cfg = get_method("prompt_tuning").peft_config(model, spec.method, path, "SEQ_CLS")
    write_adapter(tmp_path / "adapter", gather_adapter_state(model), cfg, {})

    model.eval()
    ids, mask = _ids(tok, ["the plot was dull .", "honestly , the cast was superb but long"])
    ours = model(input_ids=ids, attention_mask=mask).logits

    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    loaded = peft.PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    theirs = loaded(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_only_adapter_and_head_are_trainable(tiny_bert, tiny_data, tmp_path):
    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path))
    model, _, _ = build_model(spec)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"prompt", "base.classifier.weight", "base.classifier.bias"}


def test_init_from_peft_prompt_adapter(tiny_bert, tiny_data, tmp_path):
    """A prompt-tuning adapter saved by HF PEFT is a starting point (method.init_from)."""
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    theirs = peft.get_peft_model(base, peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=5))
    theirs.save_pretrained(str(tmp_path / "peft-adapter"))
    method = {"name": "prompt_tuning", "num_virtual_tokens": 5, "init_from": str(tmp_path / "peft-adapter")}
    model, _, _ = build_model(validate_spec(job_dict(tiny_bert, tiny_data, tmp_path, method=method)))
    torch.testing.assert_close(model.prompt.detach(), theirs.prompt_encoder["default"].embedding.weight.detach())


def test_init_from_with_other_shaping_fields_is_refused_before_any_run(tiny_bert, tiny_data, tmp_path):
    """A LoRA adapter of r 8 as the start of an r 4 job passed `validate` and failed in the workers,
    after Ray started, with 'method.init_from: method.init_from: ...' (a review finding)."""
    from peft_ray.errors import SpecError
    from peft_ray.preflight import run_preflight
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    lora = peft.LoraConfig(task_type="SEQ_CLS", r=8, target_modules=["query", "value"])
    peft.get_peft_model(base, lora).save_pretrained(str(tmp_path / "lora8"))
    start = str(tmp_path / "lora8")
    def job(**method):
        job = job_dict(tiny_bert, tiny_data, tmp_path / "out", template={"text": "{text}"})
        job["method"] = {"name": "lora", "target_modules": ["query", "value"], **method, "init_from": start}
        return validate_spec(job)
    for method, said in (({"r": 4}, "was trained with r=8 (adapter_config.json) but method.r is 4; set method.r to 8"),
                         ({"r": 8, "target_modules": ["query", "key"]}, "but method.target_modules is")):
        with pytest.raises(SpecError, match=re.escape(said)):
            run_preflight(job(**method))
    run_preflight(job(r=8, target_modules=["value", "query"]))
    run_preflight(job(r=8, target_modules=r".*\.(query|value)"))   # a pattern: the load's keys decide
    config = json.loads((tmp_path / "lora8" / "adapter_config.json").read_text())
    for field, value, said in (("target_modules", [["query"]], "target_modules is [['query']], not a module name"),
                               ("r", "8", "r is '8', not a whole number above 0")):
        (tmp_path / "lora8" / "adapter_config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(SpecError, match=re.escape(said)):   # a crafted file: named, not a TypeError
            run_preflight(job(r=8))
