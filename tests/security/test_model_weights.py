"""A config.json that does not describe the weights next to it is an error in `validate` (before
Ray) and at load time, not a randomly initialised model with a warning in a log."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import SpecError
from peft_ray.models import check_weights_match, load_auto
from tests.conftest import job_dict


def _with_weights_of(tiny_bert, tmp_path, build):
    """tiny_bert's folder (BERT config + tokenizer) with the weights `build(config)` saves."""
    m = tmp_path / "model"
    shutil.copytree(tiny_bert, m)
    for f in m.glob("*.safetensors"):
        f.unlink()
    build(json.loads((tiny_bert / "config.json").read_text())).save_pretrained(tmp_path / "w")
    for f in (tmp_path / "w").glob("*.safetensors"):
        shutil.copy(f, m / f.name)
    return m


def _gpt2(cfg):
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    return GPT2Model(GPT2Config(vocab_size=cfg["vocab_size"], n_embd=32, n_layer=2, n_head=4, n_positions=128))


def _bert(**change):
    def build(cfg):
        from transformers import BertConfig, BertForMaskedLM

        keep = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings")
        return BertForMaskedLM(BertConfig(**{**{k: cfg[k] for k in keep}, **change}))
    return build


def test_bert_config_over_gpt2_weights_fails_in_validate(tiny_bert, tiny_data, tmp_path):
    m = _with_weights_of(tiny_bert, tmp_path, _gpt2)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(m, tiny_data, tmp_path / "out")))
    import ray

    before = ray.is_initialized()
    for cmd in ("validate", "train"):
        r = CliRunner().invoke(main, [cmd, str(job)])
        assert r.exit_code == 2, r.output
        assert f"the weights in '{m}' do not match its config.json, which describes bert" in r.output
        assert "base tensors are not in the weights" in r.output and "transformer" not in r.output.split(":")[0]
        assert "Traceback" not in r.output
    assert ray.is_initialized() == before
    assert not (tmp_path / "out" / "job.yaml").exists()             # train.log aside, nothing written


def test_the_real_load_refuses_it_too(tiny_bert, tmp_path):
    m = _with_weights_of(tiny_bert, tmp_path, _gpt2)
    with pytest.raises(SpecError, match="base tensors are not in the weights"):
        load_auto(str(m), "AutoModelForSequenceClassification", seed=0, num_labels=2)


def test_unused_weights_are_an_error(tiny_bert, tmp_path):
    m = _with_weights_of(tiny_bert, tmp_path, _bert(num_hidden_layers=3))   # config says 2 layers
    with pytest.raises(SpecError, match=r"tensors in the weights would be unused \(e.g. bert.encoder.layer.2"):
        check_weights_match(str(m))


def test_other_shapes_are_an_error(tiny_bert, tmp_path):
    m = _with_weights_of(tiny_bert, tmp_path, _bert(intermediate_size=96))
    with pytest.raises(SpecError, match=r"tensors have other shapes \(e.g. encoder.layer.\d.(intermediate|output).dense"):
        check_weights_match(str(m))


def test_fresh_heads_and_a_missing_pooler_are_fine(tiny_bert, tmp_path):
    check_weights_match(str(tiny_bert))                                    # a BertModel checkpoint
    m = _with_weights_of(tiny_bert, tmp_path, _bert())                     # masked-LM save: no pooler
    check_weights_match(str(m))
    load_auto(str(m), "AutoModelForSequenceClassification", seed=0, num_labels=2)   # fresh classifier
    for auto in ("AutoModelForMaskedLM", "AutoModelForTokenClassification"):        # a pooler they drop
        load_auto(str(tiny_bert), auto, seed=0, **({"num_labels": 3} if "Token" in auto else {}))


def test_loads_never_fetch_hub_kernels(tiny_bert, monkeypatch):
    """transformers >= 5.25 kernelizes every load with Hugging Face hub kernels by default (code
    from the network); peft-ray's loads turn that off, and the meta-device check still works."""
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    check_weights_match(str(tiny_bert))
    model = load_auto(str(tiny_bert), "AutoModelForSequenceClassification", seed=0, num_labels=2)
    assert not getattr(model, "use_kernels", False)


def test_safetensors_under_another_name_fail_in_validate(tiny_bert, tmp_path):
    """transformers loads model.safetensors (or its index); a folder with other names would pass the
    check and fail in the load after Ray has started."""
    model = tmp_path / "renamed"
    shutil.copytree(tiny_bert, model)
    (model / "model.safetensors").rename(model / "junk.safetensors")
    (model / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(SpecError, match="holds junk.safetensors but no model.safetensors"):
        check_weights_match(str(model))


def test_a_fifo_in_the_model_folder_is_refused_before_any_read(tiny_bert, tiny_data, tmp_path):
    """A FIFO as model.safetensors blocked `validate` for ever."""
    import os

    m = tmp_path / "model"
    shutil.copytree(tiny_bert, m)
    (m / "model.safetensors").unlink()
    os.mkfifo(m / "model.safetensors")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(m, tiny_data, tmp_path / "out")))
    r = CliRunner().invoke(main, ["validate", str(job)])
    assert r.exit_code == 2 and "model.safetensors is not a regular file" in r.output, r.output
    with pytest.raises(SpecError, match="is not a regular file"):
        load_auto(str(m), "AutoModelForSequenceClassification", seed=0, num_labels=2)


@pytest.mark.parametrize("key", ["attn_implementation", "_attn_implementation"])
def test_a_hub_kernel_named_in_config_json_is_refused(tiny_bert, tmp_path, key):
    """transformers fetches and runs a kernel a config names by hub repo; a built-in name loads."""
    m = tmp_path / "model"
    shutil.copytree(tiny_bert, m)
    cfg = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**cfg, key: "kernels-community/flash-attn"}))
    with pytest.raises(SpecError, match=f"sets {key}: 'kernels-community/flash-attn', an attention this check"):
        load_auto(str(m), "AutoModelForSequenceClassification", seed=0, num_labels=2)
    (m / "config.json").write_text(json.dumps({**cfg, key: "eager"}))
    load_auto(str(m), "AutoModelForSequenceClassification", seed=0, num_labels=2)


@pytest.mark.parametrize("setting", [{"attn_implementation": "flash_attention_2"},
                                     {"text_config": {"_attn_implementation": "paged|flash_attention_3"}},
                                     {"attn_implementation": "flash_attention_4"}])
def test_flash_attention_without_its_package_is_refused_not_fetched(tiny_bert, tmp_path, setting):
    """A security-review finding: `flash_attention_2` passed the name check, and transformers 5,
    finding no flash_attn package, swapped it for `kernels-community/flash-attn2` and asked the hub
    for it (validate said ok; train and a shared adapter's predict reached huggingface.co)."""
    import importlib.util

    if importlib.util.find_spec("flash_attn") or importlib.util.find_spec("flash_attn_interface"):
        pytest.skip("flash-attn is installed here: transformers runs it locally")
    m = tmp_path / "model"
    shutil.copytree(tiny_bert, m)
    cfg = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**cfg, **setting}))
    with pytest.raises(SpecError, match="never downloads or runs a kernel from the Hugging Face hub"):
        load_auto(str(m), "AutoModelForSequenceClassification", seed=0, num_labels=2)
