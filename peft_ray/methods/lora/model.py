"""LoRA (Hu et al., 2021): every targeted linear layer becomes a LoraLinear, in place,
so parameter paths (and PEFT's keys ``base_model.model.<path>.lora_A.weight``) follow
the base model's own module names."""

from __future__ import annotations

from typing import List

from torch import nn

from peft_ray.methods.adapter_model import (AdapterModel, read_init_from, seeded, trainable_modules)
from peft_ray.methods.common import BuildContext
from peft_ray.methods.lora.layer import LoraLinear
from peft_ray.methods.targets import (LORA_DEFAULTS, default_targets, find_targets, is_conv1d,
                                      replace_module)


class LoraModel(AdapterModel):
    def __init__(self, base: nn.Module, heads: List[str], targets: List[str], r: int, scaling: float,
                 dropout: float, backend: str, seed: int):
        super().__init__(base, heads)
        g = seeded(seed)
        for path in targets:
            replace_module(base, path, LoraLinear(base.get_submodule(path), r, scaling, dropout, backend, g))
        self.target_paths = targets

    def peft_key(self, name: str) -> str:
        # A and B are plain parameters here (see layer.py); PEFT keeps them in nn.Linear modules.
        key = super().peft_key(name)
        return key + ".weight" if name.endswith((".lora_A", ".lora_B")) else key

    def lora_layers(self):
        return [(p, m) for p, m in self.base.named_modules() if isinstance(m, LoraLinear)]

    def merge_and_unload(self) -> nn.Module:
        """The plain transformers model with B A folded into each weight (this wrapper is spent)."""
        for path, layer in self.lora_layers():
            replace_module(self.base, path, layer.merged())
        return self.base


def resolve_targets(base: nn.Module, cfg) -> List[str] | str:
    return cfg.target_modules if cfg.target_modules is not None else default_targets(
        base, LORA_DEFAULTS, "method.target_modules")


def build(base: nn.Module, cfg, ctx: BuildContext) -> LoraModel:
    heads = trainable_modules(ctx, cfg.modules_to_save)
    paths = find_targets(base, resolve_targets(base, cfg), "method.target_modules", skip=heads)
    model = LoraModel(base, heads, paths, cfg.r, cfg.scaling, cfg.lora_dropout, ctx.kernels, ctx.seed)
    if cfg.init_from:
        state, _ = read_init_from(cfg.init_from, "LORA")
        model.load_adapter_state(state, cfg.init_from)
    return model


def merge(model: LoraModel) -> nn.Module:
    return model.merge_and_unload()


def _num(v: float):
    return int(v) if float(v).is_integer() else v


def peft_config(model: LoraModel, cfg, base_path: str, task_type: str) -> dict:
    """adapter_config.json with every key HF PEFT 0.21's LoraConfig writes."""
    targets = resolve_targets(model.base, cfg)
    return {
        "peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base_path,
        "r": cfg.r, "lora_alpha": _num(cfg.lora_alpha), "lora_dropout": cfg.lora_dropout,
        "use_rslora": cfg.use_rslora,
        "target_modules": targets if isinstance(targets, str) else sorted(set(targets)),
        "modules_to_save": model.trainable_modules or None,
        "fan_in_fan_out": any(is_conv1d(m.base_layer) for _, m in model.lora_layers()),
        "bias": "none", "lora_bias": False, "use_dora": False, "init_lora_weights": True,
        "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
        "exclude_modules": None, "target_parameters": None, "trainable_token_indices": None,
        "layer_replication": None, "megatron_config": None, "megatron_core": "megatron.core",
        "loftq_config": {}, "eva_config": None, "corda_config": None, "use_qalora": False,
        "qalora_group_size": 16, "alora_invocation_tokens": None, "arrow_config": None,
        "ensure_weight_tying": False, "inference_mode": True, "revision": None, "auto_mapping": None,
    }
