"""LoRA variants beyond the generic matrix: LoRA+'s optimizer groups, PiSSA's conversion equal to
PEFT's own, config errors, and a tiny in-process training run (ZeRO-3) whose adapter loads in PEFT."""

from __future__ import annotations

import pytest
import torch

from peft_ray.errors import SpecError
from peft_ray.spec import validate_spec
from peft_ray.train.engine import param_groups
from tests.methods.families import make_base
from tests.methods.helpers import build_ours, fresh_pair, peft_converted
from tests.methods.matrix import Row

peft = pytest.importorskip("peft")


def _spec(method: dict):
    return validate_spec({"task": {"labels": ["a", "b"]}, "template": {"text": "{text}"}, "method": method})


def test_loraplus_puts_lora_B_and_magnitude_at_lr_times_ratio():
    row = Row("plus", "lora", "bert-cls", {"r": 4, "use_dora": True, "loraplus_lr_ratio": 16})
    model = build_ours(row, make_base("bert-cls"))
    groups = param_groups(model, 1e-3, 5e-3, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    by_lr = {}
    for g in groups:   # with weight decay the head's bias is a group of its own (no decay), at the head's lr
        by_lr.setdefault(g["lr"], set()).update(names[id(p)].rsplit(".", 1)[1] for p in g["params"])
    assert by_lr == {1e-3: {"lora_A"}, 1.6e-2: {"lora_B", "lora_magnitude_vector"}, 5e-3: {"weight", "bias"}}
    # The schedule scales every group alike, so the ratio holds at every step.
    opt = torch.optim.AdamW(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(16 * opt.param_groups[0]["lr"])


def test_without_loraplus_one_adapter_group():
    model = build_ours(Row("l", "lora", "bert-cls", {"r": 4}), make_base("bert-cls"))
    assert [g["lr"] for g in param_groups(model, 1e-3, 5e-3, 0.0)] == [1e-3, 5e-3]


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_saved_adapter_is_peft_converted_form(init, tmp_path):
    """PEFT trains a PiSSA/OLoRA adapter and converts it; ours, loaded from PEFT's unconverted adapter,
    saves the same rank-2r tensors (A' = [A; A0], B' = [B, -B0])."""
    from peft_ray.adapter import gather_adapter_state

    row = Row("x", "lora", "llama-lm", {"r": 4, "lora_alpha": 8, "init_lora_weights": init})
    base, twin = fresh_pair(row)
    theirs, _, converted = peft_converted(row, twin, tmp_path)
    theirs.save_pretrained(str(tmp_path / "raw"))          # unconverted: relative to W_res
    ours = build_ours(row, base, init_from=str(tmp_path / "raw"))
    state = gather_adapter_state(ours)
    assert {k for k in converted} <= set(state)
    for key, value in converted.items():
        torch.testing.assert_close(state[key], value, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method, expected", [
    ({"name": "lora", "init_lora_weights": "loftq"}, "method.init_lora_weights"),
    ({"name": "lora", "init_lora_weights": "pissa_niter_x"}, "pissa_niter_<K>"),
    ({"name": "lora", "loraplus_lr_ratio": 0}, "method.loraplus_lr_ratio"),
])
def test_bad_variant_fields_are_named(method, expected):
    with pytest.raises(SpecError, match=expected):
        _spec(method)


def test_pissa_rank_above_layer_size_is_named():
    from peft_ray.methods import METHODS
    from peft_ray.methods.common import BuildContext

    cfg = _spec({"name": "lora", "r": 64, "init_lora_weights": "pissa"}).method
    with pytest.raises(SpecError, match="method.r: 64 is larger"):
        METHODS.get("lora").build(make_base("bert-cls"), cfg, BuildContext(tokenizer=None))


def test_local_zero3_dora_pissa_loraplus_trains_and_loads_in_peft(tiny_bert, tiny_data, tmp_path):
    """4 steps in-process under ZeRO-3 (params partitioned even on one rank: the gather is exercised)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from peft_ray.train.engine import build_model
    from peft_ray.train.local import run_local
    from tests.conftest import job_dict

    method = {"name": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"], "use_dora": True,
              "init_lora_weights": "pissa", "loraplus_lr_ratio": 4}
    raw = job_dict(tiny_bert, tiny_data, tmp_path / "run", scaling={"num_workers": 1},
                   deepspeed={"zero_stage": 3}, train={"max_steps": 4, "lr": 1e-2, "eval_every": 4})
    raw["method"] = method
    spec = validate_spec(raw)
    run_local(spec)
    adapter = tmp_path / "run" / "adapter"
    state = load_file(str(adapter / "adapter_model.safetensors"))
    key = "base_model.model.bert.encoder.layer.0.attention.self.query"
    assert state[key + ".lora_A.weight"].shape == (8, 32) and state[key + ".lora_magnitude_vector"].shape == (32,)
    assert all(v.numel() > 0 for v in state.values())
    ours, _, path = build_model(spec)
    ours.load_adapter_state(state)
    tok = AutoTokenizer.from_pretrained(path)
    batch = dict(tok(["the plot was dull .", "the cast was superb"], padding=True, return_tensors="pt"))
    batch.pop("token_type_ids", None)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    theirs = peft.PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(**batch).logits, theirs(**batch).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["bert-cls", "gpt2-lm"])
def test_dora_dropout_path_is_the_fused_formula(family):
    """The torch path (taken while training with lora_dropout > 0) is PEFT's DoRA-with-dropout formula;
    with a no-op dropout it must equal the fused-op path."""
    from tests.methods.families import make_inputs, valid_logits
    from tests.methods.helpers import perturb

    row = Row("d", "lora", family, {"r": 4, "use_dora": True, "lora_dropout": 0.1, "init_lora_weights": "pissa"})
    model = build_ours(row, make_base(family))
    perturb(model)
    batch = make_inputs(family)
    with torch.no_grad():
        fused = valid_logits(model(**batch), batch, family)
        for _, layer in model.lora_layers():
            layer.dropout = torch.nn.Dropout(0.0)
        model.train()
        for m in model.modules():  # keep the base's own dropout off: compare the LoRA paths only
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        torch_path = valid_logits(model(**batch), batch, family)
    torch.testing.assert_close(torch_path, fused, atol=1e-5, rtol=1e-5)


def test_local_pissa_resume_matches_uninterrupted(tiny_bert, tiny_data, tmp_path):
    """Resuming rebuilds B0, A0 from the base: the result equals the uninterrupted run."""
    import shutil

    from peft_ray.train.local import run_local
    from tests.conftest import job_dict

    def spec(out):
        raw = job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                       train={"max_steps": 4, "checkpoint_every": 2, "eval_every": 4, "lr": 1e-2})
        raw["method"] = {"name": "lora", "r": 4, "target_modules": ["query", "value"], "use_dora": True,
                         "init_lora_weights": "pissa_niter_2"}
        return validate_spec(raw)

    full = run_local(spec(tmp_path / "full"))
    cut = spec(tmp_path / "cut")
    run_local(cut)
    ckpts = sorted((tmp_path / "cut" / "checkpoints").glob("checkpoint_*"))
    shutil.rmtree(ckpts[-1])
    resumed = run_local(cut, resume=True)
    assert resumed["step"] == 4 and resumed["loss"] == pytest.approx(full["loss"], rel=1e-5)
