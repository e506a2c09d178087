"""LoRA (Hu et al., 2021) and its variants (DoRA, rsLoRA, LoRA+, PiSSA/OLoRA inits): every
targeted linear layer becomes a LoraLinear, in place, so parameter paths (and PEFT's keys
``base_model.model.<path>.lora_A.weight``) follow the base model's own module names."""

from __future__ import annotations

import logging
from typing import Dict, List, Optional

import torch
from torch import nn

from peft_ray.dist import rank
from peft_ray.errors import SpecError
from peft_ray.methods.adapter_model import (AdapterModel, check_keys, copy_checked, load_init_from, seeded,
                                            trainable_modules)
from peft_ray.methods.common import BuildContext
from peft_ray.methods.lora.layer import LoraLinear
from peft_ray.methods.targets import (LORA_DEFAULTS, default_targets, find_targets, is_conv1d,
                                      replace_module)

log = logging.getLogger(__name__)


class LoraModel(AdapterModel):
    kv_cache_exact = True   # weights only: decoding may use HF's KV cache

    def __init__(self, base: nn.Module, heads: List[str], targets: List[str], r: int, scaling: float,
                 dropout: float, backend: str, seed: int, init=True, use_dora: bool = False,
                 loraplus_lr_ratio: Optional[float] = None):
        super().__init__(base, heads)
        g = seeded(seed)
        for path in targets:
            layer = LoraLinear(base.get_submodule(path), r, scaling, dropout, backend, g, init, use_dora)
            replace_module(base, path, layer)
        self.target_paths = targets
        self.loraplus_lr_ratio = loraplus_lr_ratio

    def peft_key(self, name: str) -> str:
        # A and B are plain parameters here (see layer.py); PEFT keeps them in nn.Linear modules.
        key = super().peft_key(name)
        return key + ".weight" if name.endswith((".lora_A", ".lora_B")) else key

    def lora_layers(self):
        return [(p, m) for p, m in self.base.named_modules() if isinstance(m, LoraLinear)]

    def _factor_keys(self, path: str):
        prefix = self.peft_prefix + path
        return prefix + ".lora_A.weight", prefix + ".lora_B.weight"

    def adapter_state(self) -> Dict[str, torch.Tensor]:
        """PEFT's keys; after PiSSA/OLoRA the rank-2r A' = [A; A0], B' = [B, -B0] (PEFT's converted
        adapter: plain LoRA on the original base). Call inside a ZeRO-3 gather."""
        state = super().adapter_state()
        for path, layer in self.lora_layers():
            if layer.lora_A0 is not None:
                state.update(zip(self._factor_keys(path), layer.factors()))
        return state

    def load_adapter_state(self, state: Dict[str, torch.Tensor], source: str = "adapter") -> None:
        """PEFT-named tensors in. After PiSSA/OLoRA both forms load: rank 2r (ours, or PEFT's converted
        adapter: the second halves become A0, B0) or rank r (PEFT's unconverted adapter, relative to
        W_res: A0, B0 stay the ones computed from this base, as PEFT recomputes W_res on load)."""
        state = dict(state)
        with torch.no_grad():
            for path, layer in self.lora_layers():
                ka, kb = self._factor_keys(path)
                if layer.lora_A0 is not None and ka in state and state[ka].shape[0] == 2 * layer.r:
                    a, b = state[ka], state.get(kb)
                    if b is None or b.shape[1] != 2 * layer.r:
                        raise SpecError(f"{source}: '{ka}' has rank {2 * layer.r} but '{kb}' does not")
                    layer.lora_A0.copy_(a[layer.r:].to(layer.lora_A0.dtype))
                    layer.lora_B0.copy_(-b[:, layer.r:].to(layer.lora_B0.dtype))
                    state[ka], state[kb] = a[:layer.r], b[:, :layer.r]
            params = {self.peft_key(n): p for n, p in self._saved_names()}   # a tied head by its saved name
            check_keys(set(state), set(params), source)
            for key, value in state.items():
                copy_checked(params[key], value, key, source)

    def adapter_param_groups(self, lr: float, weight_decay: float) -> List[Dict]:
        """Optimizer groups of the adapter (engine.param_groups adds the head's). LoRA+ (PEFT's
        create_loraplus_optimizer rule): lora_B and 1-D parameters (DoRA's m) at lr * ratio."""
        named = [(n, p) for n, p in self._saved_names() if self.is_adapter_param(n)]
        if self.loraplus_lr_ratio is None:
            return [{"params": [p for _, p in named], "lr": lr, "weight_decay": weight_decay}]
        fast = [p for n, p in named if n.endswith(".lora_B") or p.ndim == 1]
        slow = [p for n, p in named if not (n.endswith(".lora_B") or p.ndim == 1)]
        groups = [{"params": slow, "lr": lr, "weight_decay": weight_decay},
                  {"params": fast, "lr": lr * self.loraplus_lr_ratio, "weight_decay": weight_decay}]
        return [grp for grp in groups if grp["params"]]

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
    model = LoraModel(base, heads, paths, cfg.r, cfg.scaling, cfg.lora_dropout, ctx.kernels, ctx.seed,
                      cfg.init_lora_weights, cfg.use_dora, cfg.loraplus_lr_ratio)
    log_kernel_path(cfg, ctx.kernels, len(paths))
    if cfg.init_from:
        load_init_from(model, cfg.init_from, "LORA")
    return model


def log_kernel_path(cfg, backend: str, n_layers: int) -> None:
    """Say which path the layers take (the rule is in layer.py's docstring): never a silent fallback."""
    parts = [f"{n_layers} layers, fused lora_linear (kernels: {backend})"]
    if cfg.use_dora:
        parts.append("DoRA row norm and magnitude in torch around it")
    if cfg.lora_dropout > 0:
        parts.append(f"lora_dropout {cfg.lora_dropout} > 0: plain torch while training (set 0 to fuse)")
    if rank() == 0:   # the same on every rank
        (log.warning if backend == "triton" and cfg.lora_dropout > 0 else log.info)("lora: " + "; ".join(parts))


def merge(model: LoraModel) -> nn.Module:
    return model.merge_and_unload()


def _num(v: float):
    return int(v) if float(v).is_integer() else v


def saved_rank_alpha(cfg):
    """(r, lora_alpha, init_lora_weights) of the saved adapter: PiSSA/OLoRA save PEFT's converted
    rank-2r LoRA, whose alpha keeps the scaling (x2; rsLoRA: x sqrt 2), as PEFT's save_pretrained does."""
    if not cfg.mutates_base:
        return cfg.r, cfg.lora_alpha, cfg.init_lora_weights
    return 2 * cfg.r, cfg.lora_alpha * (2 ** 0.5 if cfg.use_rslora else 2), True


def peft_config(model: LoraModel, cfg, base_path: str, task_type: str) -> dict:
    """adapter_config.json with every key HF PEFT 0.21's LoraConfig writes."""
    targets = resolve_targets(model.base, cfg)
    r, alpha, init = saved_rank_alpha(cfg)
    return {
        "peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base_path,
        "r": r, "lora_alpha": _num(alpha), "lora_dropout": cfg.lora_dropout,
        "use_rslora": cfg.use_rslora,
        "target_modules": targets if isinstance(targets, str) else sorted(set(targets)),
        "modules_to_save": model.trainable_modules or None,
        "fan_in_fan_out": any(is_conv1d(m.base_layer) for _, m in model.lora_layers()),
        "bias": "none", "lora_bias": False, "use_dora": cfg.use_dora, "init_lora_weights": init,
        "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
        "exclude_modules": None, "target_parameters": None, "trainable_token_indices": None,
        "layer_replication": None, "megatron_config": None, "megatron_core": "megatron.core",
        "loftq_config": {}, "eva_config": None, "corda_config": None, "use_qalora": False,
        "qalora_group_size": 16, "alora_invocation_tokens": None, "arrow_config": None,
        "ensure_weight_tying": False, "inference_mode": True, "revision": None, "auto_mapping": None,
    }
