"""Training trains the way the job says from step 1, whatever train.eval_every is.

`from_pretrained` returns a model in eval mode, so dropout was off until the first
evaluation turned it on. These tests run the real recipe (--local: a DeepSpeed
engine on one gloo rank) on a tiny BERT whose dropout is 0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from peft_ray.spec import validate_spec
from peft_ray.train import recipe
from peft_ray.train.local import run_local
from tests.conftest import job_dict


def _spec(tiny_bert, tiny_data, out, **train):
    t = {"max_steps": 6, "checkpoint_every": 3, "eval_every": None, **train}
    model = {"name_or_path": str(tiny_bert), "max_length": 32, "dropout": None}   # the model's own 0.1 dropout
    return validate_spec(job_dict(tiny_bert, tiny_data, out, train=t, scaling={"num_workers": 1}, model=model))


def _adapter(run_dir: Path) -> dict:
    return load_file(str(run_dir / "adapter_last" / "adapter_model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dropout_is_on_in_every_training_step(tiny_bert, tiny_data, tmp_path, monkeypatch):
    seen = []
    real_step = recipe.train_micro_step

    def observed(ctx, state, batch, *args):  # a spy: records the mode, then runs the real step
        drops = [m for m in ctx.model.modules() if isinstance(m, torch.nn.Dropout)]
        seen.append((state.global_step, all(m.training for m in drops) and len(drops) > 0))
        return real_step(ctx, state, batch, *args)

    monkeypatch.setattr(recipe, "train_micro_step", observed)
    run_local(_spec(tiny_bert, tiny_data, tmp_path / "run", eval_every=2))
    assert len(seen) == 6
    assert all(on for _, on in seen), f"dropout off at steps {[s for s, on in seen if not on]}"


def test_evaluation_does_not_change_training(tiny_bert, tiny_data, tmp_path):
    often = run_local(_spec(tiny_bert, tiny_data, tmp_path / "often", eval_every=1))
    never = run_local(_spec(tiny_bert, tiny_data, tmp_path / "never"))
    assert often["step"] == never["step"] == 6
    assert _same(_adapter(tmp_path / "often"), _adapter(tmp_path / "never"))


def test_resume_after_an_eval_matches_uninterrupted(tiny_bert, tiny_data, tmp_path):
    full = run_local(_spec(tiny_bert, tiny_data, tmp_path / "full", eval_every=3))
    cut = _spec(tiny_bert, tiny_data, tmp_path / "cut", eval_every=3)
    run_local(cut)
    ckpts = sorted((tmp_path / "cut" / "checkpoints").glob("checkpoint_*"))
    shutil.rmtree(ckpts[-1])  # as if the run died after its step-3 (post-eval) checkpoint
    resumed = run_local(cut, resume=True)
    assert resumed["step"] == 6
    assert resumed["loss"] == full["loss"]
    assert _same(_adapter(tmp_path / "cut"), _adapter(tmp_path / "full"))


def test_model_dropout_sets_every_dropout_of_the_base(tiny_bert):
    from peft_ray.models import load_classifier, set_dropout

    model = load_classifier(str(tiny_bert), 2, seed=0)
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
    set_dropout(model, 0.0)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert model.config.hidden_dropout_prob == 0.0 and model.config.attention_probs_dropout_prob == 0.0
