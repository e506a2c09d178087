"""`peft-ray export`: the adapter as HF PEFT expects it, and --merge as a plain model."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from peft_ray.adapter import gather_adapter_state, write_adapter
from peft_ray.cli import main
from peft_ray.methods import get_method
from peft_ray.spec import dump_spec, validate_spec
from peft_ray.train.engine import build_model
from tests.conftest import job_dict


def _job(model, data, out, method, **sections):
    """job_dict with the method section replaced (job_dict merges sections into its defaults)."""
    raw = job_dict(model, data, out, **sections)
    raw["method"] = method
    return validate_spec(raw)

peft = pytest.importorskip("peft")


def _fake_run(tiny_bert, tiny_data, run_dir, method):
    """A run folder as `peft-ray train` leaves it (adapter/ with peft_ray.json), without training."""
    spec = _job(tiny_bert, tiny_data, run_dir, method)
    model, tok, path = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
    cfg = get_method(spec.method.name).peft_config(model, spec.method, path, "SEQ_CLS")
    write_adapter(run_dir / "adapter", gather_adapter_state(model), cfg, {"spec": dump_spec(spec)})
    enc = tok(["the plot was dull .", "a superb cast"], padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with torch.no_grad():
        return model.eval()(**batch).logits, batch, path


@pytest.mark.parametrize("method", [{"name": "lora", "r": 4}, {"name": "ia3"}])
def test_export_merge_writes_a_plain_model(tiny_bert, tiny_data, tmp_path, method):
    from transformers import AutoModelForSequenceClassification

    logits, batch, _ = _fake_run(tiny_bert, tiny_data, tmp_path / "run", method)
    res = CliRunner().invoke(main, ["export", str(tmp_path / "run"), str(tmp_path / "merged"), "--merge"])
    assert res.exit_code == 0, res.output
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, logits, atol=1e-5, rtol=1e-5)
    # the job's input length and a card saying what was merged (a review finding: neither was there)
    from transformers import AutoTokenizer

    max_length = json.loads((tmp_path / "run" / "adapter" / "peft_ray.json").read_text())["spec"]["model"]["max_length"]
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").model_max_length == max_length
    card = (tmp_path / "merged" / "README.md").read_text()
    assert f"merged-{method['name']}" in card and f"max_length={max_length}" in card and "library_name: transformers" in card


def test_export_adapter_loads_in_peft(tiny_bert, tiny_data, tmp_path):
    from transformers import AutoModelForSequenceClassification

    logits, batch, path = _fake_run(tiny_bert, tiny_data, tmp_path / "run", {"name": "p_tuning",
                                                                             "num_virtual_tokens": 4})
    res = CliRunner().invoke(main, ["export", str(tmp_path / "run"), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["peft_type"] == "P_TUNING"
    for name in ("README.md", "peft_ray.json"):   # the model card and the job record come along
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "run" / "adapter" / name).read_bytes()
    loaded = peft.PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(path, num_labels=2),
                                            str(tmp_path / "out")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, logits, atol=1e-5, rtol=1e-5)


def test_export_errors_name_the_problem(tiny_bert, tiny_data, tmp_path):
    res = CliRunner().invoke(main, ["export", str(tmp_path), str(tmp_path / "out")])
    assert res.exit_code == 2 and "no adapter" in res.output
    _fake_run(tiny_bert, tiny_data, tmp_path / "run", {"name": "prefix_tuning", "num_virtual_tokens": 3})
    res = CliRunner().invoke(main, ["export", str(tmp_path / "run"), str(tmp_path / "m"), "--merge"])
    assert res.exit_code == 2 and "only ia3 and lora merge" in res.output


def test_export_into_a_folder_the_run_replaces_or_checks_is_refused(tiny_bert, tiny_data, tmp_path):
    """An export into run/adapter/sub was deleted by the next --resume, and one into a checkpoint's
    adapter made that checkpoint fail its check (a review finding)."""
    run = tmp_path / "run"
    _fake_run(tiny_bert, tiny_data, run, {"name": "lora", "r": 2})
    (run / "job.yaml").write_text("name: x\n")
    (run / "train.log").write_text("")
    (run / "checkpoints" / "checkpoint_00000002").mkdir(parents=True)
    for inside, managed in ((run / "adapter" / "sub", run / "adapter"),
                            (run / "checkpoints" / "checkpoint_00000002" / "adapter" / "x", run / "checkpoints")):
        res = CliRunner().invoke(main, ["export", str(run), str(inside)])
        assert res.exit_code == 2 and f"lies inside {managed}, which peft-ray writes and replaces" in res.output
        assert not inside.exists()
    res = CliRunner().invoke(main, ["export", str(run), str(run / "handoff")])
    assert res.exit_code == 0 and (run / "handoff" / "adapter_config.json").is_file(), res.output
    # a project folder with the user's own job file is not a run: its adapter/ or best/ are free names
    (tmp_path / "job.yaml").write_text("name: mine\n")
    res = CliRunner().invoke(main, ["export", str(run / "handoff"), str(tmp_path / "best" / "lora")])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("method", [{"name": "p_tuning", "num_virtual_tokens": 4},
                                    {"name": "p_tuning", "num_virtual_tokens": 4,
                                     "encoder_reparameterization_type": "LSTM"}])
def test_eval_and_predict_load_a_p_tuning_run(tiny_bert, tiny_data, tmp_path, method):
    """P-tuning saves the prompt encoder's output; loading the run's job (which builds the encoder)
    takes that prompt and gives the trained model's logits (eval and predict load this way)."""
    from peft_ray.inference import load_adapter

    logits, batch, _ = _fake_run(tiny_bert, tiny_data, tmp_path / "run", method)
    loaded = load_adapter(tmp_path / "run" / "adapter", device="cpu")
    assert not hasattr(loaded.engine.module, "prompt_encoder")
    with torch.no_grad():
        torch.testing.assert_close(loaded.engine(**batch).logits, logits, atol=1e-5, rtol=1e-5)


def test_a_p_tuning_save_in_train_mode_is_the_evaluated_prompt(tiny_bert, tiny_data, tmp_path):
    """An ML review finding: checkpoints are saved mid-training, and an LSTM prompt encoder with
    dropout, run in train mode, saved one random draw (about 10% off the prompt evaluation had
    scored) and drew from the training RNG. The saved prompt is the eval-mode encoder's output."""
    spec = _job(tiny_bert, tiny_data, tmp_path / "run", {"name": "p_tuning", "num_virtual_tokens": 4,
                                                          "encoder_reparameterization_type": "LSTM",
                                                          "encoder_num_layers": 2, "encoder_dropout": 0.5})
    model, _, _ = build_model(spec)
    model.train()
    with torch.no_grad():
        evaluated = model.eval().prompt_encoder.compute().clone()
    model.train()
    rng = torch.get_rng_state()
    saved = [gather_adapter_state(model)["prompt_embeddings"] for _ in range(2)]
    assert model.training and model.prompt_encoder.training
    assert torch.equal(torch.get_rng_state(), rng)
    for s in saved:
        torch.testing.assert_close(s, evaluated)
