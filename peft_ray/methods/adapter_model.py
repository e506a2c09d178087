"""What every method's wrapper shares: the frozen base, modules_to_save, PEFT key
names, switching the adapter off, and loading an HF PEFT adapter (`method.init_from`).

Key names. PEFT saves injected adapters (LoRA, IA3) and modules_to_save under
``base_model.model.<module path>``; prompt-learning methods (prompt tuning,
p-tuning, prefix tuning) save ``prompt_embeddings`` plus the head under
``base_model.<module path>``. Our wrappers keep the HF model as ``.base`` and put
injected parameters at the same module paths, so a key is our parameter name with
``base.`` swapped for the PEFT prefix.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Iterator, List

import torch
from torch import nn

from peft_ray.adapter import CONFIG, WEIGHTS, read_adapter, read_json_object
from peft_ray.errors import SpecError
from peft_ray.methods.common import freeze_except

INJECTED_PREFIX = "base_model.model."   # LoRA, IA3
PROMPT_PREFIX = "base_model."            # prompt-learning methods


class AdapterModel(nn.Module):
    """Wraps a frozen HF model (``.base``); subclasses add the adapter."""

    peft_prefix = INJECTED_PREFIX
    # Whether HF's KV cache reproduces this forward (decoding's fast path). Only adapters that
    # change weights and nothing about the sequence say yes; prompt methods prepend or inject.
    kv_cache_exact = False

    def __init__(self, base: nn.Module, trainable_modules: List[str]):
        super().__init__()
        self.base = base
        self.trainable_modules = list(trainable_modules)
        self.adapter_enabled = True
        freeze_except(base, self.trainable_modules)  # the adapter's own params are added after this

    def forward(self, *args, **kwargs):
        return self.base(*args, **kwargs)

    def is_head_param(self, name: str) -> bool:
        """True for parameters of modules_to_save (the head): own learning rate, saved in full."""
        if not name.startswith("base."):
            return False
        path = name[len("base."):]
        return any(path.startswith(m + ".") or ("." + m + ".") in path for m in self.trainable_modules)

    def is_adapter_param(self, name: str) -> bool:
        return not self.is_head_param(name)

    def adapter_param_groups(self, lr: float, weight_decay: float) -> List[Dict]:
        """Optimizer groups of the adapter's trainable parameters (engine.param_groups adds the
        head's): one here; a method with its own split overrides it (LoRA+)."""
        params = [p for n, p in self.named_parameters() if p.requires_grad and self.is_adapter_param(n)]
        return [{"params": params, "lr": lr, "weight_decay": weight_decay}]

    def peft_key(self, name: str) -> str:
        """Our parameter name -> HF PEFT's saved key."""
        return self.peft_prefix + name[len("base."):]

    def _saved_names(self) -> Iterator:
        """(name, param) of the trainable parameters, a tied one under the name PEFT saves it by:
        GPT-2's lm_head shares the embedding's tensor, and named_parameters() reports it only as
        transformer.wte.weight, where PEFT's modules_to_save=[lm_head] looks for lm_head.weight."""
        names: Dict[int, str] = {}
        params: Dict[int, nn.Parameter] = {}
        for n, p in self.named_parameters(remove_duplicate=False):
            if not p.requires_grad:
                continue
            if id(p) not in names or (self.is_head_param(n) and not self.is_head_param(names[id(p)])):
                names[id(p)] = n
            params[id(p)] = p
        return ((names[i], params[i]) for i in names)

    def head_state(self) -> Dict[str, torch.Tensor]:
        return {self.peft_key(n): p for n, p in self._saved_names() if self.is_head_param(n)}

    def adapter_state(self) -> Dict[str, torch.Tensor]:
        """Trainable tensors under HF PEFT's key names (call inside a ZeRO-3 gather)."""
        return dict((self.peft_key(n), p) for n, p in self._saved_names())

    def load_adapter_state(self, state: Dict[str, torch.Tensor], source: str = "adapter") -> None:
        """Copy PEFT-named tensors in; every trainable parameter must be covered, nothing left over."""
        targets = self.adapter_state()
        check_keys(set(state), set(targets), source)
        with torch.no_grad():
            for key, value in state.items():
                copy_checked(targets[key], value, key, source)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model alone (modules_to_save keep their trained values, unlike PEFT's copies)."""
        switches = [m for m in self.modules() if hasattr(m, "adapter_enabled")]
        for m in switches:
            m.adapter_enabled = False
        try:
            yield
        finally:
            for m in switches:
                m.adapter_enabled = True


def check_keys(have: set, want: set, source: str) -> None:
    """`source` names the adapter; a job's method.init_from can change the method fields to fit, while
    a trained run's adapter (eval, predict, export) fits only the base model it was trained on."""
    missing, extra = sorted(want - have), sorted(have - want)
    if missing or extra:
        advice = ("Set the method fields (target_modules, r, num_virtual_tokens, ...) to the values in its "
                  "adapter_config.json" if source.startswith(INIT_FROM) else
                  "It was trained on another base model (or method) than the one it is loaded onto: load it onto "
                  "its own base model")
        raise SpecError(f"{source} does not fit this method's config: missing keys {missing[:3]}"
                        f"{'...' if len(missing) > 3 else ''}, unexpected keys {extra[:3]}"
                        f"{'...' if len(extra) > 3 else ''}. {advice}")


INIT_FROM = "method.init_from"


def copy_checked(param: torch.Tensor, value: torch.Tensor, key: str, source: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise SpecError(f"{source}: '{key}' has shape {tuple(value.shape)} but this model needs "
                        f"{tuple(param.shape)}; match the method fields to its adapter_config.json")
    param.copy_(value.to(param.dtype))


# Method fields that decide the adapter's tensors, under the same names in HF PEFT's adapter_config.json.
SHAPING = ("r", "num_virtual_tokens", "target_modules", "feedforward_modules")


def check_init_from(path: str, peft_type: str, cfg=None) -> None:
    """method.init_from names an HF PEFT adapter folder of `peft_type` whose shaping fields agree with
    the method's `cfg` (files and config only: the pre-flight calls this before any model loads)."""
    p = Path(path).expanduser()
    if not (p / CONFIG).is_file() or not (p / WEIGHTS).is_file():
        raise SpecError(f"method.init_from: '{path}' is not an HF PEFT adapter folder (needs {CONFIG} and {WEIGHTS})")
    config = read_json_object(p / CONFIG, "method.init_from:")
    found = config.get("peft_type")
    if found != peft_type:
        raise SpecError(f"method.init_from: '{path}' holds a {found} adapter, not {peft_type}")
    for field in SHAPING:
        mine, theirs = getattr(cfg, field, None), config.get(field)
        if theirs is not None:
            check_shaping_type(field, theirs, p / CONFIG)
        if mine is None or theirs is None:
            continue      # a default resolved per model, or a field this method lacks: the load checks it
        lists = isinstance(mine, (list, tuple)), isinstance(theirs, list)
        if any(lists) and not all(lists):
            continue      # a pattern against names: whether they select the same layers, the load's keys say
        if (set(mine) != set(theirs)) if all(lists) else mine != theirs:
            raise SpecError(f"method.init_from: '{path}' was trained with {field}={theirs!r} ({CONFIG}) but "
                            f"method.{field} is {mine!r}; set method.{field} to {theirs!r}")


def check_shaping_type(field: str, value, where: Path) -> None:
    """HF PEFT writes r and num_virtual_tokens as whole numbers and the module fields as a name (a
    pattern) or a list of names: anything else was not written by it, and is named as such."""
    if field in ("r", "num_virtual_tokens"):
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        kind = "a whole number above 0"
    else:
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        kind = "a module name pattern or a list of module names"
    if not ok:
        raise SpecError(f"method.init_from: {where}: {field} is {repr(value)[:80]}, not {kind}; this is not an "
                        "adapter_config.json HF PEFT wrote")


def load_init_from(model: "AdapterModel", path: str, peft_type: str) -> None:
    """method.init_from: an HF PEFT adapter folder of `peft_type`, loaded into `model` as its start."""
    check_init_from(path, peft_type)
    state, _, _ = read_adapter(Path(path).expanduser())
    model.load_adapter_state(state, f"method.init_from: {path}")


def trainable_modules(ctx, modules_to_save) -> List[str]:
    """The head (added by the task, as PEFT does for SEQ_CLS) plus the user's modules_to_save."""
    return list(dict.fromkeys(list(ctx.head_modules) + list(modules_to_save or [])))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, g: torch.Generator, base: nn.Module) -> torch.Tensor:
    """N(0, 1) from `g`, or an uninitialised meta tensor when the base lives on `meta` (counting only)."""
    if on_meta(base):
        return torch.empty(shape, device="meta")
    return torch.randn(shape, generator=g)


def on_meta(base: nn.Module) -> bool:
    return next(base.parameters()).device.type == "meta"


def build_device(base: nn.Module):
    """Context for creating the adapter's modules: `meta` for a meta base (bench/param_table.py)."""
    return torch.device("meta") if on_meta(base) else contextlib.nullcontext()
