"""Tiny models from config must actually learn each task: proof that preprocessing, loss masking,
decoding and the metrics line up (a misaligned label or an off-by-one decode scores ~0).

The frozen bases are random, so the LM head is trained too (method.modules_to_save): a random
frozen head behind a final norm caps how confident any logit can get.
"""

from __future__ import annotations

import pytest

from tests.tasks import synthetic as S
from tests.tasks.conftest import GPT2_LORA, LLAMA_LORA, T5_LORA, make_data, task_job, train_local

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family,method", [("llama", LLAMA_LORA), ("gpt2", GPT2_LORA)])
def test_decoder_learns_key_value_generation(tiny_models, tmp_path, family, method):
    data = make_data(tmp_path / "data", S.key_value_rows)
    job = task_job(tiny_models(family), data, tmp_path / "out", {"type": "generation"},
                   {"text": "key {key} value : {label}"}, method, steps=150, lr=0.01)
    m = train_local(job)
    assert m["exact_match"] >= 0.9, m
    assert m["token_f1"] >= m["exact_match"] and m["rouge_l"] >= 0.9


def test_decoder_beam_and_sampling_decode_the_learned_answer(tiny_models, tmp_path):
    data = make_data(tmp_path / "data", S.key_value_rows)
    job = task_job(tiny_models("llama"), data, tmp_path / "out", {"type": "generation"},
                   {"text": "key {key} value : {label}"}, LLAMA_LORA, steps=150, lr=0.01)
    for decoding in ({"strategy": "beam", "num_beams": 3}, {"strategy": "sample", "temperature": 0.5, "top_k": 3}):
        job["task"]["decoding"] = decoding
        job["output"]["dir"] = str(tmp_path / decoding["strategy"])
        assert train_local(job)["exact_match"] >= 0.9, decoding


def test_t5_learns_a_transduction_as_translation(tiny_models, tmp_path):
    data = make_data(tmp_path / "data", S.transduction_rows)
    job = task_job(tiny_models("t5"), data, tmp_path / "out", {"type": "translation", "target_column": "target"},
                   {"text": "key {key} value :"}, T5_LORA, steps=300, lr=0.005)
    m = train_local(job)
    assert m["exact_match"] >= 0.9, m
    assert m["bleu"] > 50 and m["chrf"] > 50


@pytest.mark.parametrize("method,lr", [({"name": "lora"}, 0.01),
                                       ({"name": "prefix_tuning", "num_virtual_tokens": 8}, 0.01),
                                       ({"name": "prompt_tuning", "num_virtual_tokens": 8}, 0.05)])
def test_ner_gazetteer_reaches_entity_f1(tiny_models, tmp_path, method, lr):
    data = make_data(tmp_path / "data", S.ner_rows, n_val=64)
    task = {"type": "token_classification", "labels": ["PER", "LOC", "ORG"]}
    m = train_local(task_job(tiny_models("bert"), data, tmp_path / "out", task, {"text": "{soft} {tokens}"},
                             method, steps=100, lr=lr))
    assert m["entity_f1"] >= 0.9, m
    assert {"f1/PER", "f1/LOC", "f1/ORG", "token_accuracy"} <= set(m)


def test_causal_verbalizer_classification_learns(tiny_models, tmp_path):
    data = make_data(tmp_path / "data", S.sentiment_rows, n_val=64)
    task = {"type": "classification", "labels": ["negative", "positive"]}  # head: auto -> verbalizer (causal)
    template = {"text": "review : {text} it was {label}",
                "verbalizer": {"negative": ["bad", "awful"], "positive": "good"}}
    method = {"name": "lora", "r": 8, "lora_alpha": 16, "modules_to_save": ["lm_head"]}
    m = train_local(task_job(tiny_models("gpt2"), data, tmp_path / "out", task, template, method, steps=100,
                             lr=0.01))
    assert m["accuracy"] >= 0.9, m
    _loads_in_peft_as_a_causal_lm(tmp_path / "out" / "adapter", tiny_models("gpt2"))


def _loads_in_peft_as_a_causal_lm(adapter, base_path):
    """No head is trained: the adapter is a CAUSAL_LM one, and HF PEFT wraps the plain causal LM
    with it, every saved tensor used (a SEQ_CLS config would build a classifier with a new head)."""
    import json

    import peft
    import torch
    from transformers import AutoModelForCausalLM

    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    plain = AutoModelForCausalLM.from_pretrained(str(base_path))
    loaded = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_path)), str(adapter))
    assert isinstance(loaded, peft.PeftModelForCausalLM)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(loaded(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_masked_lm_verbalizer_classification_learns(tiny_models, tmp_path):
    """BERT-family scoring at the {label} mask; the MLM head (`cls`) trains with the adapter."""
    data = make_data(tmp_path / "data", S.sentiment_rows, n_val=64)
    task = {"type": "classification", "labels": ["negative", "positive"], "head": "verbalizer"}
    template = {"text": "review : {text} it was {label}", "verbalizer": {"negative": "bad", "positive": "good"}}
    job = task_job(tiny_models("bert"), data, tmp_path / "out", task, template,
                   {"name": "lora", "modules_to_save": ["cls"]}, steps=100, lr=0.01,
                   train={"warmup_ratio": 0.0, "schedule": "constant"})
    assert train_local(job)["accuracy"] >= 0.9


@pytest.mark.parametrize("name", ["prefix_tuning", "prompt_tuning"])
def test_prompt_methods_generate_on_llama(tiny_models, tmp_path, name):
    """Virtual tokens at the input (prompt tuning, through the causal prompt cache) or K/V rows
    in every attention layer (prefix tuning): decoding re-runs exactly the trained forward."""
    data = make_data(tmp_path / "data", S.key_value_rows)
    method = {"name": name, "num_virtual_tokens": 8, "modules_to_save": ["lm_head"]}
    job = task_job(tiny_models("llama"), data, tmp_path / "out", {"type": "generation"},
                   {"text": "{soft} key {key} value : {label}"}, method, steps=300, lr=0.03)
    assert train_local(job)["exact_match"] >= 0.9
