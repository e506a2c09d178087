"""Generic tests over the matrix (HF PEFT's test-suite pattern): PEFT interop both ways,
merge, disabling, and which parameters train. fp32, atol 1e-5."""

from __future__ import annotations

import pytest
import torch

from tests.methods.families import make_inputs, task_type, valid_logits
from tests.methods.helpers import build_ours, fresh_pair, peft_model, perturb, save_ours
from tests.methods.matrix import MERGEABLE, PEFT_CANNOT_INIT, PEFT_UNSUPPORTED, ROWS, mutates_base

peft = pytest.importorskip("peft")
ATOL = RTOL = 1e-5


def _skip_if_peft_cannot(row, init=False):
    why = PEFT_UNSUPPORTED.get((row.method, row.family)) or PEFT_UNSUPPORTED.get((row.method, "*"))
    if why:
        pytest.skip(f"HF PEFT cannot run {row.method} on {row.family}: {why}")
    why = init and PEFT_CANNOT_INIT.get((row.name, row.family))
    if why:
        pytest.skip(f"HF PEFT cannot create {row.name} on {row.family}: {why}")


def _logits(model, row):
    batch = make_inputs(row.family)
    with torch.no_grad():
        return valid_logits(model(**batch), batch, row.family)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_our_adapter_loads_in_peft(row, tmp_path):
    _skip_if_peft_cannot(row)
    base, twin = fresh_pair(row)
    ours = build_ours(row, base)
    perturb(ours)
    save_ours(row, ours, tmp_path / "adapter")
    theirs = peft.PeftModel.from_pretrained(twin, str(tmp_path / "adapter")).eval()
    torch.testing.assert_close(_logits(ours, row), _logits(theirs, row), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_peft_adapter_loads_in_ours(row, tmp_path):
    _skip_if_peft_cannot(row, init=True)
    base, twin = fresh_pair(row)
    theirs = peft_model(row, twin)
    perturb(theirs)
    theirs.save_pretrained(str(tmp_path / "peft"))
    ours = build_ours(row, base, init_from=str(tmp_path / "peft"))
    torch.testing.assert_close(_logits(ours, row), _logits(theirs.eval(), row), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_adapter_config_matches_peft(row, tmp_path):
    """Every key we write has PEFT's own value (computed sizes, GQA token_dim, targets...); PiSSA/OLoRA:
    the values of PEFT's converted adapter (save_pretrained(path_initial_model_for_weight_conversion=...))."""
    _skip_if_peft_cannot(row, init=True)
    from peft_ray.methods import get_method
    from tests.methods.helpers import method_config, peft_converted

    base, twin = fresh_pair(row)
    ours = get_method(row.method).peft_config(build_ours(row, base), method_config(row), None,
                                              task_type(row.family))
    if mutates_base(row):
        theirs = peft_converted(row, twin, tmp_path)[1]
    else:
        theirs = peft_model(row, twin).peft_config["default"].to_dict()
    skip = {"inference_mode", "modules_to_save", "base_model_name_or_path"}
    for key, value in ours.items():
        if key in skip:
            continue
        want = theirs[key]
        want = getattr(want, "value", want)  # enums (peft_type, task_type, encoder type)
        if isinstance(want, (set, list)) and isinstance(value, list):
            value, want = sorted(value), sorted(want)
        assert value == want, f"{key}: ours {value!r} != PEFT {want!r}"


@pytest.mark.parametrize("row", [r for r in ROWS if r.method in MERGEABLE], ids=lambda r: r.id)
def test_merged_equals_unmerged(row):
    base, _ = fresh_pair(row)
    ours = build_ours(row, base)
    perturb(ours)
    before = _logits(ours, row)
    from peft_ray.methods.lora.layer import LoraLinear
    from peft_ray.methods.ia3.layer import IA3Linear

    plain = ours.merge_and_unload()
    assert not any(isinstance(m, (LoraLinear, IA3Linear)) for m in plain.modules())
    assert type(plain).__module__.startswith("transformers.")
    torch.testing.assert_close(_logits(plain, row), before, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_disabled_adapter_equals_base(row):
    base, twin = fresh_pair(row)
    ours = build_ours(row, base)
    perturb(ours, only=ours.is_adapter_param)  # the head is trained in place, so leave it
    on = _logits(ours, row)
    with ours.disable_adapter():
        off = _logits(ours, row)
    torch.testing.assert_close(off, _logits(twin, row), atol=ATOL, rtol=RTOL)
    assert on.shape != off.shape or not torch.allclose(on, off, atol=1e-6, rtol=1e-4), "the adapter changed nothing"
    torch.testing.assert_close(_logits(ours, row), on)  # re-enabled afterwards


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_only_adapter_params_change(row):
    base, _ = fresh_pair(row)
    ours = build_ours(row, base).train()
    perturb(ours)
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert len(ours.adapter_state()) >= 1 and trainable
    opt = torch.optim.SGD(ours.parameters(), lr=0.5)
    batch = make_inputs(row.family)
    out = ours(**batch)
    out.logits.float().pow(2).mean().backward()
    opt.step()
    for name, p in ours.named_parameters():
        changed = not torch.equal(p, before[name])
        # a trainable parameter whose gradient is exactly zero stays (e.g. a key bias: softmax ignores a
        # constant added to every score), but it must have been reached (a gradient, not None)
        exact_zero = not changed and p.grad is not None and not p.grad.any()
        assert (changed or exact_zero) == (name in trainable), \
            f"{name}: changed={changed}, trainable={name in trainable}"
    assert any(not torch.equal(p, before[n]) for n, p in ours.named_parameters() if n in trainable)
    heads = {n for n in trainable if ours.is_head_param(n)}
    expected_heads = {"bert-cls": "classifier", "gpt2-cls": "score", "llama-cls": "score"}.get(row.family)
    extra = set(row.kwargs.get("modules_to_save") or [])
    allowed = extra | ({expected_heads} if expected_heads else set())
    assert all(any(f".{m}." in n for m in allowed) for n in heads), heads
