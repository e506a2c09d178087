"""bench/same_steps_vs_hf.py on a tiny from-config Llama: peft-ray's recorded start and batches,
retraced by HF PEFT, give the same losses and adapter (the bench's claim, at a test's size)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_rows
from peft_ray.data import builtin
from tests.tasks import synthetic as S

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("peft")


def test_hf_peft_retraces_a_recorded_lora_run(tmp_path, monkeypatch):
    model = S.make_model(tmp_path / "llama", "llama")
    data = tmp_path / "data"
    write_rows(data / "train.parquet", builtin.make_rows(48, seed=1))
    write_rows(data / "validation.parquet", builtin.make_rows(24, seed=2))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "same-steps", "model": {"name_or_path": str(model), "max_length": 32},
        "task": {"type": "classification", "labels": ["negative", "positive"], "head": "verbalizer"},
        "template": {"text": "{text} It was {label}", "verbalizer": {"negative": ["bad"], "positive": ["good"]}},
        "method": {"name": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "data": {"root": str(data), "train": "train.parquet", "validation": "validation.parquet"},
        "train": {"max_steps": 5, "batch_size": 8, "lr": 5.0e-3, "warmup_ratio": 0.2, "seed": 0},
        "scaling": {"num_workers": 1}, "output": {"dir": str(tmp_path / "unused")}}))
    spec = importlib.util.spec_from_file_location("same_steps_vs_hf", ROOT / "bench" / "same_steps_vs_hf.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["same_steps_vs_hf.py", "--job", str(job), "--data", str(data), "--seed", "0",
                                      "--threads", "1", "--out", str(out)])
    bench.main()
    r = json.loads(out.read_text())
    assert r["steps"] == 5 and len(r["curve"]) == 5
    assert r["max_loss_diff"] < 1e-5 and r["max_weight_diff"] < 1e-4
    assert r["curve"][0]["peft_ray"] != r["curve"][-1]["peft_ray"]          # it trained
    assert r["step_ms"]["micro_steps"] == 3 and r["step_ms"]["peft_ray"] > 0 and r["step_ms"]["hf_peft"] > 0
    assert r["accuracy"]["peft_ray"] == pytest.approx(r["accuracy"]["hf_peft_same_steps"], abs=1e-9)
