"""LoRA through the real engine and a 2-worker ZeRO-3 Ray run; the real MiniLM as a smoke test."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from peft_ray.adapter import gather_adapter_state, write_adapter
from peft_ray.methods import get_method
from peft_ray.spec import validate_spec
from peft_ray.train.engine import build_model, param_groups
from tests.conftest import job_dict


def _job(model, data, out, method, **sections):
    """job_dict with the method section replaced (job_dict merges sections into its defaults)."""
    raw = job_dict(model, data, out, **sections)
    raw["method"] = method
    return validate_spec(raw)

peft = pytest.importorskip("peft")
LORA = {"name": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}


def _batch(tok):
    enc = tok(["the plot was dull .", "honestly , the cast was superb"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _peft_logits(path, adapter, batch):
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    with torch.no_grad():
        return peft.PeftModel.from_pretrained(base, str(adapter)).eval()(**batch).logits


def test_lora_param_groups_split_adapter_and_head(tiny_bert, tiny_data, tmp_path):
    spec = _job(tiny_bert, tiny_data, tmp_path, LORA, kernels="torch")
    model, _, _ = build_model(spec)
    adapter, head = param_groups(model, 1e-3, 0.1, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(".lora_" in names[id(p)] for p in adapter["params"]) and len(adapter["params"]) == 8
    assert {names[id(p)] for p in head["params"]} == {"base.classifier.weight", "base.classifier.bias"}
    assert head["lr"] == 0.1


@pytest.mark.parametrize("method", [LORA, {"name": "p_tuning", "num_virtual_tokens": 4},
                                    {"name": "ia3", "target_modules": ["key", "value", "output.dense"],
                                     "feedforward_modules": ["output.dense"]}])
def test_weight_decay_skips_biases_and_norms_as_hf_trainer(tiny_bert, tiny_data, tmp_path, method):
    """HF Trainer's own rule decides: its get_decay_parameter_names on the same model."""
    from transformers import Trainer

    model, _, _ = build_model(_job(tiny_bert, tiny_data, tmp_path, method, kernels="torch",
                                   train={"weight_decay": 0.01}))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, 1e-3, 0.1, 0.01)
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decayed == trainable & set(Trainer.get_decay_parameter_names(None, model))
    assert any("bias" in n for n in trainable - decayed)
    assert sum(len(g["params"]) for g in groups) == len(trainable)


@pytest.mark.ray
@pytest.mark.slow
def test_lora_zero3_two_workers_saves_full_adapter(ray_runtime, tiny_bert, tiny_data, tmp_path):
    from peft_ray.train.driver import run_train

    spec = _job(tiny_bert, tiny_data, tmp_path / "run", LORA, deepspeed={"zero_stage": 3},
                train={"max_steps": 2, "lr": 1e-2})
    metrics = run_train(spec)
    assert metrics["step"] == 2
    adapter = tmp_path / "run" / "adapter"
    state = load_file(str(adapter / "adapter_model.safetensors"))
    prefix = "base_model.model.bert.encoder.layer"
    for layer in (0, 1):
        for proj in ("query", "value"):
            assert state[f"{prefix}.{layer}.attention.self.{proj}.lora_A.weight"].shape == (4, 32)
            assert state[f"{prefix}.{layer}.attention.self.{proj}.lora_B.weight"].shape == (32, 4)
    assert state["base_model.model.classifier.weight"].shape == (2, 32)
    assert all(v.numel() > 0 and v.abs().sum() > 0 for v in state.values())  # B moved off its zero init
    ours, tok, path = build_model(spec)
    ours.load_adapter_state(state)
    batch = _batch(tok)
    with torch.no_grad():
        mine = ours.eval()(**batch).logits
    torch.testing.assert_close(mine, _peft_logits(path, adapter, batch), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_minilm_lora_loads_in_peft_and_prefix_runs(tiny_data, tmp_path):
    spec = _job("minilm", tiny_data, tmp_path, {"name": "lora", "r": 8, "lora_alpha": 16})
    model, tok, path = build_model(spec)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    cfg = get_method("lora").peft_config(model, spec.method, path, "SEQ_CLS")
    write_adapter(tmp_path / "adapter", gather_adapter_state(model), cfg, {})
    batch = _batch(tok)
    with torch.no_grad():
        mine = model.eval()(**batch).logits
    torch.testing.assert_close(mine, _peft_logits(path, tmp_path / "adapter", batch), atol=1e-5, rtol=1e-5)

    spec = _job("minilm", tiny_data, tmp_path, {"name": "prefix_tuning"})
    prefixed, _, _ = build_model(spec)
    with torch.no_grad():
        on = prefixed.eval()(**batch).logits
        with prefixed.disable_adapter():
            off = prefixed(**batch).logits
    assert torch.isfinite(on).all() and not torch.allclose(on, off)
