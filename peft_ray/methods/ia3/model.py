"""IA3: every targeted linear layer becomes an IA3Linear, in place (PEFT's keys
``base_model.model.<path>.ia3_l``)."""

from __future__ import annotations

from typing import List, Tuple

from torch import nn

from peft_ray.methods.adapter_model import AdapterModel, load_init_from, trainable_modules
from peft_ray.methods.common import BuildContext
from peft_ray.methods.ia3.layer import IA3Linear
from peft_ray.methods.targets import (IA3_DEFAULTS, default_targets, find_targets, is_conv1d, matches,
                                      replace_module)


class IA3Model(AdapterModel):
    kv_cache_exact = True   # weights only: decoding may use HF's KV cache

    def __init__(self, base: nn.Module, heads: List[str], targets: List[str], feedforward: List[str]):
        super().__init__(base, heads)
        for path in targets:
            replace_module(base, path, IA3Linear(base.get_submodule(path), path in feedforward))

    def ia3_layers(self):
        return [(p, m) for p, m in self.base.named_modules() if isinstance(m, IA3Linear)]

    def merge_and_unload(self) -> nn.Module:
        for path, layer in self.ia3_layers():
            replace_module(self.base, path, layer.merged())
        return self.base


def resolve(base: nn.Module, cfg) -> Tuple:
    if cfg.target_modules is not None:
        return cfg.target_modules, cfg.feedforward_modules or []
    return default_targets(base, IA3_DEFAULTS, "method.target_modules")


def is_feedforward(path: str, feedforward) -> bool:
    """PEFT's rule: a regex must match the whole path; a name matches as a plain suffix."""
    if isinstance(feedforward, str):
        return matches(path, feedforward, field="method.feedforward_modules")
    return any(path.endswith(f) for f in feedforward)


def build(base: nn.Module, cfg, ctx: BuildContext) -> IA3Model:
    heads = trainable_modules(ctx, cfg.modules_to_save)
    targets, ff = resolve(base, cfg)
    paths = find_targets(base, targets, "method.target_modules", skip=heads)
    model = IA3Model(base, heads, paths, [p for p in paths if is_feedforward(p, ff)])
    if cfg.init_from:
        load_init_from(model, cfg.init_from, "IA3")
    return model


def merge(model: IA3Model) -> nn.Module:
    return model.merge_and_unload()


def _as_json(v):
    return v if isinstance(v, str) else sorted(set(v))


def peft_config(model: IA3Model, cfg, base_path: str, task_type: str) -> dict:
    """adapter_config.json with every key HF PEFT 0.21's IA3Config writes."""
    targets, ff = resolve(model.base, cfg)
    return {
        "peft_type": "IA3", "task_type": task_type, "base_model_name_or_path": base_path,
        "target_modules": _as_json(targets), "feedforward_modules": _as_json(ff),
        "fan_in_fan_out": any(is_conv1d(m.base_layer) for _, m in model.ia3_layers()),
        "modules_to_save": model.trainable_modules or None, "init_ia3_weights": True,
        "exclude_modules": None, "inference_mode": True, "revision": None, "auto_mapping": None,
    }
