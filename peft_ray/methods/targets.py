"""Which linear layers an injected adapter (LoRA, IA3) wraps, with HF PEFT's matching rules.

- a list of names matches a module whose dotted path equals a name or ends with
  ``"." + name`` (``query`` matches ``bert.encoder.layer.0.attention.self.query``);
- a string is a regular expression that must match the whole path (``re.fullmatch``), run by
  the `regex` package (transformers' own dependency), which takes a time limit: a job file is
  shared data, and a pattern such as ``([\w.]|[\w.])*X`` backtracks for days under ``re``.
Defaults per model family are PEFT 0.21's own tables, so a job that names no
targets gets the adapter PEFT would build.
"""

from __future__ import annotations

import re
import time
import warnings
from typing import Dict, List, Optional, Tuple, Union

import regex
from torch import nn

from peft_ray.errors import SpecError, suggest

Targets = Union[str, List[str]]
MATCH_SECONDS = 2.0   # for all of a model's module paths; a sane pattern takes microseconds a path

# PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING (the families peft-ray tests).
LORA_DEFAULTS: Dict[str, List[str]] = {
    "bert": ["query", "value"], "roberta": ["query", "value"], "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "t5": ["q", "v"]}
# PEFT's IA3 tables: (target_modules, feedforward_modules).
IA3_DEFAULTS: Dict[str, Tuple[List[str], List[str]]] = {
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "roberta": (["key", "value", "output.dense"], ["output.dense"]),
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "mistral": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "t5": (["k", "v", "wo"], ["wo"])}


def check_targets(v: Optional[Targets]) -> Optional[Targets]:
    """Config check: a non-empty list of module names, or a regex that compiles (PEFT's two forms)."""
    if isinstance(v, list) and not v:
        raise ValueError("must name at least one module, e.g. [query, value], or be null for the model's default")
    if isinstance(v, str):
        if re.search(r"\[\[:\^?[a-z]+:\]", v):   # a POSIX class to `regex`, a set of characters to `re`
            raise ValueError("uses a POSIX class ([[:alpha:]]); write the characters out, e.g. [A-Za-z]")
        try:
            with warnings.catch_warnings():      # re's FutureWarning on "[[": the pattern is the user's
                warnings.simplefilter("ignore", FutureWarning)
                re.compile(v)  # PEFT's own syntax: what the exported adapter_config.json must hold
            regex.compile(v)
        except (re.error, regex.error) as e:
            raise ValueError(f"is not a valid regular expression ({e}); use a list of module names instead")
    return v


def model_type(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", "unknown")


def default_targets(model: nn.Module, table: dict, field: str):
    family = model_type(model)
    if family not in table:
        raise SpecError(f"{field}: no default for model type '{family}'; list the linear layers to adapt, "
                        f"e.g. {field}: [q_proj, v_proj] (known defaults: {', '.join(sorted(table))})")
    return table[family]


def matches(path: str, targets: Targets, seconds: float = MATCH_SECONDS,
            field: str = "method.target_modules") -> bool:
    if isinstance(targets, str):
        try:
            return regex.fullmatch(targets, path, timeout=seconds) is not None
        except TimeoutError:
            raise SpecError(f"{field}: the regular expression {targets!r} took more than "
                            f"{MATCH_SECONDS:g} s to match the model's module paths (it backtracks without "
                            "end); list the module names instead, e.g. [q_proj, v_proj]") from None
    return any(path == t or path.endswith("." + t) for t in targets)


def matcher(targets: Targets, field: str = "method.target_modules"):
    """`matches` for every path of one model, within one MATCH_SECONDS budget in all."""
    deadline = time.monotonic() + MATCH_SECONDS
    return lambda path: matches(path, targets, max(deadline - time.monotonic(), 1e-3), field)


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's Conv1D: a linear layer whose weight is stored (d_in, d_out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def in_out(module: nn.Module) -> Tuple[int, int]:
    if is_conv1d(module):
        return module.weight.shape[0], module.weight.shape[1]
    return module.in_features, module.out_features


def find_targets(model: nn.Module, targets: Targets, field: str, skip: Optional[List[str]] = None) -> List[str]:
    """Dotted paths of the linear layers to wrap; errors name the field and show real module names.
    Every name of a list must match one (a misspelt `querry` beside `value` adapted `value` alone)."""
    skip, match = skip or [], matcher(targets, field)
    found, not_linear = [], []
    for path, module in model.named_modules():
        if not path or not match(path) or any(path == s or path.startswith(s + ".") for s in skip):
            continue
        (found if is_linear(module) else not_linear).append(path)
    if not found:
        hint = f" (they are not linear layers: {not_linear[:3]})" if not_linear else ""
        raise SpecError(f"{field}: {targets!r} matches no linear layer of this {model_type(model)} model{hint}. "
                        f"{_how_to_name(model, targets)}")
    if isinstance(targets, list):   # a head the method trains in full (skipped here) is matched too
        linear = [p for p, m in model.named_modules() if p and is_linear(m)]
        unmatched = [t for t in targets if not any(matches(p, [t]) for p in linear)]
        if unmatched:
            raise SpecError(f"{field}: {unmatched[0]!r} matches no linear layer of this {model_type(model)} model"
                            f"{suggest(unmatched[0], _leaves(model))}, so the adapter would leave it out. "
                            f"{_how_to_name(model, targets)}")
    return found


def _leaves(model: nn.Module) -> List[str]:
    return sorted({p.rsplit(".", 1)[-1] for p, m in model.named_modules() if p and is_linear(m)})


def _how_to_name(model: nn.Module, targets: Targets) -> str:
    """What the linear layers are called, and for a string, that it is a pattern over whole paths."""
    said = f"Its linear layers are named: {', '.join(_leaves(model))}"
    if isinstance(targets, str):
        example = next((p for p, m in model.named_modules() if p and is_linear(m)), "")
        said += (f". A string is a regular expression that must match a whole module path (e.g. {example!r}); "
                 f"to name layers by their own names, give a list, e.g. [{targets}]")
    return said


def replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, new)


def check_method_modules(model_path: str, cfg, trust_remote_code: bool = False) -> None:
    """Before any run, on one build of the base on the meta device (no weights read): the method's
    module patterns (target_modules, IA3's feedforward pattern) and its modules_to_save."""
    patterns = {field: value for field, value in cfg.module_patterns().items() if value is not None}
    if not patterns and not cfg.modules_to_save:
        return
    base = meta_base(model_path, trust_remote_code)
    if base is None:
        return
    for field, targets in patterns.items():
        check_named_targets(base, targets, field)
    check_saved_modules(base, cfg.modules_to_save)


def check_named_targets(base: nn.Module, targets: Targets, field: str = "method.target_modules") -> None:
    """Before any run: target_modules must name linear layers of the base, built on the meta device
    from its config (no weights read), each name of a list at least one. The task's model class
    puts its base under a prefix (`bert.` in BertForSequenceClassification) and adds a head, so a
    name (or a pattern over whole paths) counts where it matches a base path with or without that
    prefix, or names a head; the real build checks the head's paths. A pattern is run over every
    path, so one that backtracks without end fails now too."""
    prefix = getattr(base, "base_model_prefix", "")
    linear = [p for p, m in base.named_modules() if p and is_linear(m)]
    paths = linear + [f"{prefix}.{p}" for p in linear if prefix]
    if isinstance(targets, str):
        match = matcher(targets, field)
        hits = [p for p in paths if match(p)]
        for path, _ in base.named_modules():     # every path, not only the linear ones: the build runs them all
            match(path)
        # a pattern that is one layer's own name (`query`) meant a list; anything else may match
        # only the task class's head, which the real build checks
        if not hits and targets in _leaves(base):
            raise SpecError(f"{field}: {targets!r} matches no linear layer of this {model_type(base)} model. "
                            f"{_how_to_name(base, targets)}")
        return
    unmatched = [name for name in targets if name.split(".", 1)[0] not in HEAD_NAMES
                 and not any(matches(p, [name]) for p in paths)]
    if len(unmatched) == len(targets):
        raise SpecError(f"{field}: {targets!r} matches no linear layer of this {model_type(base)} model. "
                        f"{_how_to_name(base, targets)}")
    # A name the bare base lacks may be a layer of the task class's head (DistilBERT's
    # pre_classifier, BART's classification_head), which only the real build has and checks; one
    # spelt like a base layer (`querry`) is refused now.
    near = [(name, suggest(name, _leaves(base))) for name in unmatched]
    typo = next(((name, hint) for name, hint in near if hint), None)
    if typo:
        raise SpecError(f"{field}: {typo[0]!r} matches no linear layer of this {model_type(base)} model{typo[1]}, "
                        f"so the adapter would leave it out. {_how_to_name(base, targets)}")


def meta_base(model_path: str, trust_remote_code: bool = False) -> Optional[nn.Module]:
    """The base model (AutoModel, no task head) built on the meta device from its config alone, or
    None where transformers has no base class for it (the real build then checks)."""
    import torch
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code, local_files_only=True)
        with torch.device("meta"):
            return AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, ImportError):
        return None


# The heads transformers' task classes add above the base (sequence and token classifiers, causal
# and masked LM heads): names modules_to_save may give that the bare base has not.
HEAD_NAMES = ("classifier", "score", "lm_head", "cls")


def check_saved_modules(base: nn.Module, names: Optional[List[str]]) -> None:
    """Each method.modules_to_save name is a module of the base or a task head (the build matches it
    the same way, as a path or a path's ending). An unknown name failed only in the Ray workers,
    after Ray Train had restarted them twice."""
    if not names:
        return
    paths = [p for p, _ in base.named_modules() if p]
    prefix = getattr(base, "base_model_prefix", "") + "."     # "bert." in a task class's own paths
    missing = [m for m in names if m.split(".", 1)[0] not in HEAD_NAMES
               and not any(p == n or p.endswith("." + n) for n in {m, m.removeprefix(prefix)} for p in paths)]
    if missing:
        tops = sorted({p.split(".", 1)[0] for p in paths})
        raise SpecError(f"method.modules_to_save: no module named {missing} in this {model_type(base)} model; its "
                        f"modules are {', '.join(tops)} and their parts (e.g. {paths[min(3, len(paths) - 1)]}), and "
                        f"task heads are {', '.join(HEAD_NAMES)} (a classifier's head is saved without naming it)")

