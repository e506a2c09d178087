"""Method configs: PEFT's field names and defaults, and errors that name the field."""

from __future__ import annotations

import pytest

from peft_ray.errors import SpecError
from peft_ray.methods import METHODS
from peft_ray.spec import validate_spec


def _spec(method: dict):
    return validate_spec({"task": {"labels": ["a", "b"]}, "template": {"text": "{text}"}, "method": method})


def test_all_methods_registered():
    assert {"prompt_tuning", "prefix_tuning", "p_tuning", "lora", "ia3"} <= set(METHODS.names())


def test_peft_defaults():
    lora = _spec({"name": "lora"}).method
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.use_rslora, lora.target_modules) == (8, 8, 0.0, False, None)
    assert lora.scaling == 1.0 and _spec({"name": "lora", "r": 16, "use_rslora": True}).method.scaling == 2.0
    prefix = _spec({"name": "prefix_tuning"}).method
    assert (prefix.num_virtual_tokens, prefix.prefix_projection) == (20, False)
    pt = _spec({"name": "p_tuning"}).method
    assert (pt.encoder_reparameterization_type, pt.encoder_num_layers) == ("MLP", 2)


@pytest.mark.parametrize("method, expected", [
    ({"name": "lora", "r": 0}, "method.r"),
    ({"name": "lora", "lora_dropout": 1.5}, "method.lora_dropout"),
    ({"name": "lora", "target_modules": []}, "method.target_modules"),
    ({"name": "lora", "target_modules": "(unclosed"}, "method.target_modules"),
    ({"name": "lora", "rank": 4}, "method.rank: unknown key"),
    ({"name": "lora", "lora_alpah": 4}, "did you mean 'lora_alpha'"),
    ({"name": "ia3", "target_modules": ["k"], "feedforward_modules": ["wo"]}, "must also be in method.target_modules"),
    ({"name": "prefix_tuning", "encoder_hidden_size": 64}, "prefix_projection"),
    ({"name": "p_tuning", "encoder_reparameterization_type": "GRU"}, "method.encoder_reparameterization_type"),
    ({"name": "lroa"}, "did you mean 'lora'"),
])
def test_bad_method_fields_are_named(method, expected):
    with pytest.raises(SpecError) as e:
        _spec(method)
    assert expected in str(e.value)


def test_unknown_target_names_the_field_and_real_layers():
    from peft_ray.methods.common import BuildContext
    from tests.methods.families import make_base

    cfg = _spec({"name": "lora", "target_modules": ["q_proj"]}).method
    with pytest.raises(SpecError, match=r"method.target_modules: \['q_proj'\] matches no linear layer.*query"):
        METHODS.get("lora").build(make_base("bert-cls"), cfg, BuildContext(tokenizer=None))


def test_init_from_must_be_a_peft_adapter_of_the_same_type(tmp_path):
    from peft_ray.methods.common import BuildContext
    from tests.methods.families import make_base

    cfg = _spec({"name": "lora", "init_from": str(tmp_path)}).method
    with pytest.raises(SpecError, match="method.init_from: .* is not an HF PEFT adapter folder"):
        METHODS.get("lora").build(make_base("bert-cls"), cfg, BuildContext(tokenizer=None))


def test_ia3_feedforward_modules_may_be_empty():
    """PEFT's "none of the targets is a feedforward module"."""
    from peft_ray.spec import load_spec

    spec = load_spec(None, ["task.labels=[a, b]",
                            "method={name: ia3, target_modules: [key, value], feedforward_modules: []}"])
    assert spec.method.feedforward_modules == []
