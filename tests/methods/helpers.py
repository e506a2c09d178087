"""Building our model and PEFT's for a matrix row, and comparing them."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from peft_ray.adapter import gather_adapter_state, write_adapter
from peft_ray.methods import get_method
from peft_ray.methods.common import BuildContext
from peft_ray.models import head_modules
from tests.methods.families import make_base, task_type
from tests.methods.matrix import Row


def method_config(row: Row, **extra):
    spec = get_method(row.method)
    return spec.config_cls(name=row.method, **row.kwargs, **extra)


def build_ours(row: Row, base, kernels: str = "torch", **extra):
    ctx = BuildContext(tokenizer=None, seed=0, head_modules=head_modules(base), kernels=kernels)
    return get_method(row.method).build(base, method_config(row, **extra), ctx).eval()


def perturb(model: torch.nn.Module, seed: int = 3, only=None) -> None:
    """Move every trainable tensor off its init (LoRA's B starts at 0, IA3 at 1): no test passes by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and (only is None or only(name)):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


def save_ours(row: Row, model, out: Path) -> Path:
    cfg = get_method(row.method).peft_config(model, method_config(row), "tiny-" + row.family,
                                             task_type(row.family))
    return write_adapter(out, gather_adapter_state(model), cfg, {})


def peft_model(row: Row, base):
    import peft

    from tests.methods.matrix import peft_config

    return peft.get_peft_model(base, peft_config(row, task_type(row.family)))


def fresh_pair(row: Row):
    """(a base to wrap, an identical untouched copy)."""
    base = make_base(row.family)
    return base, copy.deepcopy(base)


def peft_converted(row: Row, base, tmp: Path):
    """PEFT's own PiSSA/OLoRA -> LoRA conversion (its documented two-save recipe), after a perturbation:
    (model, adapter_config.json dict, saved tensors)."""
    import json

    from safetensors.torch import load_file

    model = peft_model(row, base)
    init = model.peft_config["default"].init_lora_weights
    model.peft_config["default"].init_lora_weights = True
    model.save_pretrained(str(tmp / "initial"))
    model.peft_config["default"].init_lora_weights = init
    perturb(model)
    model.save_pretrained(str(tmp / "converted"), path_initial_model_for_weight_conversion=str(tmp / "initial"))
    out = tmp / "converted"
    return model, json.loads((out / "adapter_config.json").read_text()), load_file(str(out / "adapter_model.safetensors"))
